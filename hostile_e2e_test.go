package main

// End-to-end tests of containers that lie, with real Docker and podman
// (runc) containers and the real daemon: root inside its container,
// default capabilities unless said. The protected file is /etc/hostname,
// which every runtime gives every container (a file of the runtime's,
// bind-mounted in), read with cat (denied) and head (allowed).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// hostileProfile protects /etc/hostname in the containers named
// RUNID-RUNTIME-hostile-*.
const hostileProfile = `
  - name: strict
    containers: {name: '%s-*'}
    mode: protect
    filters:
      - name: hostname
        path: /etc/hostname
        behavior: block
        allow: [head]
`

// hostilePrefix is the start of this test's container names.
func hostilePrefix(rt runtimeCLI, test string) string {
	return runID + "-" + rt.name + "-" + test
}

// startCmd runs a container of the test image with extra run arguments
// and a command; it is removed at the end. It returns the full id.
func (rt runtimeCLI) startCmd(t *testing.T, name string, extra []string, command ...string) string {
	t.Helper()
	args := append(append([]string{}, rt.run...), "--name", name)
	args = append(append(args, extra...), testImage)
	out := rt.must(t, append(args, command...)...)
	id := out[strings.LastIndexByte(out, '\n')+1:]
	if len(id) != 64 {
		t.Fatalf("%s run printed %q, not an id", rt.bin, out)
	}
	t.Cleanup(func() { rt.cmd(t, append(rt.rm, name)...) })
	return id
}

// waitReady waits until the container's command has printed "ready":
// what it does to fool the daemon is done before the daemon starts.
func (rt runtimeCLI) waitReady(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, _ := rt.cmd(t, "logs", name)
		if strings.Contains(out, "ready") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never got ready: %s", name, out)
		}
		time.Sleep(100 * time.Millisecond) // polling a condition, with a deadline
	}
}

// pidOf is the host's pid of the container's first process.
func (rt runtimeCLI) pidOf(t *testing.T, name string) int {
	t.Helper()
	pid, err := strconv.Atoi(rt.must(t, "inspect", "-f", "{{.State.Pid}}", name))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func (rt runtimeCLI) mustDenyHostname(t *testing.T, name string) {
	t.Helper()
	out, err := rt.cmd(t, "exec", name, "cat", "/etc/hostname")
	if err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("cat /etc/hostname in %s: %v %q, want EPERM", name, err, out)
	}
}

func (rt runtimeCLI) mustReadHostname(t *testing.T, name string) {
	t.Helper()
	if out, err := rt.cmd(t, "exec", name, "head", "/etc/hostname"); err != nil || strings.Contains(out, "not permitted") {
		t.Fatalf("head /etc/hostname in %s: %v %q, want it read", name, err, out)
	}
}

func hostileDaemon(t *testing.T, profiles string, args ...string) *daemon {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "fsmon.yml")
	writeConfig(t, cfg, "profiles:"+profiles)
	return startDaemon(t, append([]string{"--config.file=" + cfg, "--containers.scan-interval=100ms", "--containers.hook-socket=",
		"--log.level=debug"}, args...)...)
}

func TestDockerSymlinkIntoHostVolume(t *testing.T) { testSymlinkIntoHostVolume(t, dockerCLI) }
func TestPodmanSymlinkIntoHostVolume(t *testing.T) { testSymlinkIntoHostVolume(t, podmanCLI) }

// testSymlinkIntoHostVolume: the container makes its protected /prot a
// symlink into a volume of host files. Its rule covers the host's files
// then, but judges its own processes only: the host reads them, old and
// new; the host's own rule on a file of the volume still denies all.
func testSymlinkIntoHostVolume(t *testing.T, rt runtimeCLI) {
	rt.need(t)
	hostDir := t.TempDir()
	data := filepath.Join(hostDir, "data")
	hsecret := filepath.Join(hostDir, "hsecret")
	writeConfig(t, data, "host data\n")
	writeConfig(t, hsecret, "host secret\n")
	name := hostilePrefix(rt, "vol") + "-1"
	rt.startCmd(t, name, []string{"-v", hostDir + ":/vol"}, "sh", "-c", "/bin/busybox ln -s /vol /prot && echo ready && exec sleep 100000")
	rt.waitReady(t, name)
	d := hostileDaemon(t, fmt.Sprintf(`
  - name: host
    host: true
    mode: protect
    filters:
      - name: hsecret
        path: %s
        behavior: block
        allow: [/nonexistent]
  - name: inner
    containers: {name: '%s'}
    mode: protect
    filters:
      - name: prot
        path: /prot
        recursive: true
        behavior: block
        allow: [head]
`, hsecret, name))
	d.waitLog(t, 1, `msg="watching container"`, "container="+name)
	if out, err := rt.cmd(t, "exec", name, "cat", "/prot/data"); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("cat /prot/data in the container: %v %q, want EPERM", err, out)
	}
	if out, err := runCmd(t, "cat", data); err != nil || out != "host data\n" {
		t.Fatalf("the host's cat of %s: %v %q", data, err, out)
	}
	newFile := filepath.Join(hostDir, "new")
	if out, err := runCmd(t, "sh", "-c", "echo made later > "+newFile+" && cat "+newFile); err != nil || out != "made later\n" {
		t.Fatalf("the host's new file: %v %q", err, out)
	}
	if out, err := rt.cmd(t, "exec", name, "cat", "/vol/new"); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("cat /vol/new in the container: %v %q, want EPERM", err, out)
	}
	mustBeDenied(t, hsecret, "the host's rule, for the host")
	if out, err := rt.cmd(t, "exec", name, "cat", "/vol/hsecret"); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("cat /vol/hsecret in the container: %v %q, want EPERM", err, out)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.lines {
		if m["event"] == "denied" && m["profile"] == "inner" && m["container.name"] != name {
			t.Errorf("the container's rule judged another's process: %v", m)
		}
	}
}

func TestDockerDecoyChroot(t *testing.T) { testDecoyChroot(t, dockerCLI) }
func TestPodmanDecoyChroot(t *testing.T) { testDecoyChroot(t, podmanCLI) }

// testDecoyChroot: the container's first process chroots into a decoy
// before the daemon starts. What the runtime starts in the container
// later has the real root, and its open of the real file is denied.
func testDecoyChroot(t *testing.T, rt runtimeCLI) {
	rt.need(t)
	prefix := hostilePrefix(rt, "decoy")
	name := prefix + "-1"
	rt.startCmd(t, name, nil, "sh", "-c",
		"B=/bin/busybox; $B mkdir -p /decoy/bin /decoy/etc && $B cp $B /decoy/bin/ && echo decoy > /decoy/etc/hostname && echo ready && exec $B chroot /decoy /bin/busybox sleep 100000")
	rt.waitReady(t, name)
	if l, err := os.Readlink(fmt.Sprintf("/proc/%d/root", rt.pidOf(t, name))); err != nil || !strings.HasSuffix(l, "/decoy") {
		t.Fatalf("the first process is not in its decoy: %q %v", l, err)
	}
	d := hostileDaemon(t, fmt.Sprintf(hostileProfile, prefix))
	d.waitLog(t, 1, `msg="watching container"`, "container="+name)
	rt.mustDenyHostname(t, name)
	rt.mustReadHostname(t, name)
	d.event(t, "denied in "+name, func(m map[string]any) bool {
		return m["event"] == "denied" && m["container.name"] == name && m["file.path"] == "/etc/hostname"
	})
}

func TestDockerSpoofedHostname(t *testing.T) { testSpoofedHostname(t, dockerCLI) }
func TestPodmanSpoofedHostname(t *testing.T) { testSpoofedHostname(t, podmanCLI) }

// testSpoofedHostname: a container claims, by its hostname and its
// HOSTNAME, the name a monitor-only profile selects. Its profile is the
// one its runtime's name selects, in its processes with the lie in their
// environment too.
func testSpoofedHostname(t *testing.T, rt runtimeCLI) {
	rt.need(t)
	prefix := hostilePrefix(rt, "liar")
	name := prefix + "-1"
	lie := "zz-" + runID + "-other"
	rt.startCmd(t, name, []string{"--hostname", lie, "-e", "HOSTNAME=" + lie}, "sh", "-c", "echo ready; exec sleep 100000")
	rt.waitReady(t, name)
	d := hostileDaemon(t, fmt.Sprintf(hostileProfile+`
  - name: lax
    containers: {name: '%s'}
    filters:
      - name: hostname
        path: /etc/hostname
`, prefix, lie))
	d.waitLog(t, 1, `msg="watching container"`, "container="+name)
	rt.mustDenyHostname(t, name)
	if out, err := rt.cmd(t, "exec", name, "/bin/busybox", "env", "HOSTNAME="+lie, "cat", "/etc/hostname"); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Fatalf("cat with HOSTNAME=%s: %v %q, want EPERM", lie, err, out)
	}
	ev := d.event(t, "denied in "+name, func(m map[string]any) bool {
		return m["event"] == "denied" && m["container.name"] == name
	})
	if ev["profile"] != "strict" {
		t.Errorf("deny of the liar: %v", ev)
	}
}

func TestDockerCgroupMove(t *testing.T) {
	testCgroupMove(t, dockerCLI)
}
func TestPodmanCgroupMove(t *testing.T) { testCgroupMove(t, podmanCLI) }

// testCgroupMove: with CAP_SYS_ADMIN, a container mounts the cgroup file
// systems and moves its first process into another container's cgroup
// before the daemon starts. It is still known by its own id and name,
// and denied by its own profile; nothing is reported of the container
// whose cgroup it took.
func testCgroupMove(t *testing.T, rt runtimeCLI) {
	rt.need(t)
	prefix := hostilePrefix(rt, "mover")
	victim := runID + "-" + rt.name + "-victim"
	victimID := rt.startCmd(t, victim, nil, "sh", "-c", "echo ready; exec sleep 100000")
	rt.waitReady(t, victim)
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", rt.pidOf(t, victim)))
	if err != nil {
		t.Fatal(err)
	}
	// The victim's path in the unified hierarchy, and in the v1 pids one.
	var unified, pids string
	for _, l := range strings.Split(string(cg), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			unified = p
		}
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && f[1] == "pids" {
			pids = f[2]
		}
	}
	if !strings.Contains(unified+pids, victimID) {
		t.Fatalf("the victim's cgroup names no id:\n%s", cg)
	}
	name := prefix + "-1"
	script := "B=/bin/busybox; $B mkdir -p /mnt/u /mnt/p"
	if unified != "" {
		script += " && $B mount -t cgroup2 none /mnt/u && echo 1 > /mnt/u" + unified + "/cgroup.procs"
	}
	if pids != "" {
		script += " && $B mount -t cgroup -o pids none /mnt/p && echo 1 > /mnt/p" + pids + "/cgroup.procs"
	}
	id := rt.startCmd(t, name, []string{"--cap-add", "SYS_ADMIN"}, "sh", "-c", script+" && echo ready; exec sleep 100000")
	rt.waitReady(t, name)
	// Moved where it could: its unified line (the one a cgroup reader
	// takes) and its pids line name the victim.
	moved, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", rt.pidOf(t, name)))
	for _, l := range strings.Split(string(moved), "\n") {
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && (f[0] == "0" || f[1] == "pids") && !strings.Contains(f[2], victimID) {
			t.Fatalf("the container did not move into the victim's cgroup:\n%s", moved)
		}
	}
	d := hostileDaemon(t, fmt.Sprintf(hostileProfile, prefix))
	d.waitLog(t, 1, `msg="watching container"`, "container="+name, "id="+id)
	rt.mustDenyHostname(t, name)
	d.event(t, "denied in "+name+" by its own id", func(m map[string]any) bool {
		return m["event"] == "denied" && m["container.id"] == id && m["container.name"] == name
	})
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.lines {
		if m["container.id"] == victimID {
			t.Errorf("an event named the container whose cgroup was taken: %v", m)
		}
	}
}

func TestDockerBudgetFilling(t *testing.T) { testBudgetFilling(t, dockerCLI) }
func TestPodmanBudgetFilling(t *testing.T) { testBudgetFilling(t, podmanCLI) }

// testBudgetFilling: a container fills its recursive filter with more
// directories than its object budget. The rest of it is not marked, the
// metric says how much, and a directory the host makes afterwards is
// followed: its new file's change is reported.
func testBudgetFilling(t *testing.T, rt runtimeCLI) {
	rt.need(t)
	prefix := hostilePrefix(rt, "fill")
	name := prefix + "-1"
	rt.startCmd(t, name, nil, "sh", "-c",
		"i=0; while [ $i -lt 300 ]; do /bin/busybox mkdir -p /data/d$i; i=$((i+1)); done; echo ready; exec sleep 100000")
	rt.waitReady(t, name)
	hostDir := t.TempDir()
	d := hostileDaemon(t, fmt.Sprintf(`
  - name: host
    host: true
    filters:
      - name: tree
        path: %s
        recursive: true
  - name: fill
    containers: {name: '%s-*'}
    mode: protect
    filters:
      - name: data
        path: /data
        recursive: true
        behavior: block
        allow: [head]
`, hostDir, prefix), "--containers.max-objects=50", "--watch.max-objects=200")
	d.waitLog(t, 1, `msg="container reached its object budget`, "container="+name)
	d.waitLog(t, 1, `msg="watching container"`, "container="+name)
	if v, err := strconv.Atoi(d.metric(t, "fsmon_container_budget_unmarked_objects")); err != nil || v == 0 {
		t.Errorf("fsmon_container_budget_unmarked_objects = %q, want > 0", d.metric(t, "fsmon_container_budget_unmarked_objects"))
	}
	newDir := filepath.Join(hostDir, "new")
	if err := os.Mkdir(newDir, 0o755); err != nil {
		t.Fatal(err)
	}
	probe := filepath.Join(newDir, "probe")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if out, err := runCmd(t, "sh", "-c", "echo x >> "+probe); err != nil {
			t.Fatalf("writing %s: %v %s", probe, err, out)
		}
		d.mu.Lock()
		found := false
		for _, m := range d.lines {
			if m["event"] == "change" && m["file.path"] == probe {
				found = true
			}
		}
		d.mu.Unlock()
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no change of %s: the host's new directory is not followed", probe)
		}
		time.Sleep(100 * time.Millisecond) // polling a condition, with a deadline
	}
}

// TestPodmanHookProtectsFromTheFirstOpen: with the daemon's OCI hook in
// podman's hooks directory, every container is walked before its first
// program runs: containers whose command opens their protected file at
// once are all denied, a count, not a race won. The daemon's scan is
// hours away; the hook is what does it.
func TestPodmanHookProtectsFromTheFirstOpen(t *testing.T) {
	rt := podmanCLI
	rt.need(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "hook.sock")
	hooks := filepath.Join(dir, "hooks.d")
	if err := os.Mkdir(hooks, 0o755); err != nil {
		t.Fatal(err)
	}
	bin, err := filepath.Abs(os.Getenv("FSMON_BINARY"))
	if err != nil || os.Getenv("FSMON_BINARY") == "" {
		t.Skip("FSMON_BINARY not set")
	}
	writeConfig(t, filepath.Join(hooks, "fsmon.json"), fmt.Sprintf(
		`{"version":"1.0.0","hook":{"path":%q,"args":["fsmon_exporter","hook","--socket=%s"]},"when":{"always":true},"stages":["createRuntime"]}`, bin, sock))
	prefix := hostilePrefix(rt, "first")
	cfg := filepath.Join(dir, "fsmon.yml")
	writeConfig(t, cfg, "profiles:"+fmt.Sprintf(hostileProfile, prefix))
	d := startDaemon(t, "--config.file="+cfg, "--containers.scan-interval=1h", "--containers.hook-socket="+sock)
	d.waitLog(t, 1, `msg=ready`)
	eventuallyExists(t, sock)
	const n = 10
	denied := 0
	for i := range n {
		name := fmt.Sprintf("%s-%d", prefix, i)
		args := []string{"--hooks-dir=" + hooks, "--runtime", "runc", "run", "--rm", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
			"--name", name, testImage, "cat", "/etc/hostname"}
		out, err := rt.cmd(t, args...)
		t.Cleanup(func() { rt.cmd(t, append(rt.rm, name)...) })
		if err != nil && strings.Contains(out, "Operation not permitted") {
			denied++
		} else {
			t.Logf("%s: %v %q", name, err, out)
		}
	}
	if denied != n {
		t.Errorf("%d of %d containers denied their first open, want all", denied, n)
	}
	d.waitLog(t, n, `msg="watching container"`, "found_by=hook")
}

// TestHookFromAnotherMountNamespaceIsRefused: the hook socket hears only
// root in the host's mount namespace; a peer in a mount namespace of its
// own (as a container's root with the socket mounted in would be) gets
// an error, and no container is made of what it says.
func TestHookFromAnotherMountNamespaceIsRefused(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "hook.sock")
	cfg := filepath.Join(dir, "fsmon.yml")
	writeConfig(t, cfg, "profiles:"+fmt.Sprintf(hostileProfile, runID+"-refused"))
	d := startDaemon(t, "--config.file="+cfg, "--containers.scan-interval=1h", "--containers.hook-socket="+sock)
	d.waitLog(t, 1, `msg=ready`)
	eventuallyExists(t, sock)
	bin, _ := filepath.Abs(os.Getenv("FSMON_BINARY"))
	state := fmt.Sprintf(`{"id":"%s","pid":%d,"bundle":"/nonexistent"}`, strings.Repeat("a", 64), os.Getpid())
	cmd := exec.Command("unshare", "--mount", bin, "hook", "--socket="+sock)
	cmd.Stdin = strings.NewReader(state)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not root in the host's mount namespace") {
		t.Fatalf("hook from another mount namespace: %v %q, want refused", err, out)
	}
	d.waitLog(t, 1, `msg="hook socket: peer refused"`)
}

// eventuallyExists waits until path exists.
func eventuallyExists(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared", path)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, with a deadline
	}
}
