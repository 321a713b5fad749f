package engine

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/marks"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/container"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// fakeContainer is the nearest real thing to a container this machine
// can run without a runtime: a busybox root file system, a process in
// new mount and PID namespaces that made it the root of its mount
// namespace (pivot_root), in a cgroup whose path has the shape a runtime
// gives it, recorded as runc records its containers (writeInitState).
type fakeContainer struct {
	id     string
	name   string // its name in the Docker state file runContainer writes for it, and its HOSTNAME
	root   string
	pid    int32 // the container's init, as the host sees it
	cmd    *exec.Cmd
	cgroup string
}

func randomID(t *testing.T) string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// testRun starts the names of this process's containers. Every engine
// with container scanning on sees every container of the machine, so
// the tests select their own by it: the container tests of another
// test process running at the same time must neither deny the opens of
// these containers nor have theirs denied.
var testRun = func() string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "t" + hex.EncodeToString(b)
}()

// scanForTests is the container scan interval of most tests.
const scanForTests = 200 * time.Millisecond

// startScanning starts an engine that scans for containers every scan,
// with {run} in the configuration replaced by testRun.
func startScanning(t *testing.T, scan time.Duration, yaml string) *harness {
	t.Helper()
	return start(t, strings.ReplaceAll(yaml, "{run}", testRun), func(o *Options) { o.ContainerScan = scan })
}

// busyboxRoot makes a minimal root file system.
func busyboxRoot(t *testing.T) string {
	t.Helper()
	bb := testroot.RequireCommand(t, "busybox")
	root := filepath.Join(t.TempDir(), "rootfs")
	for _, d := range []string{"bin", "etc", "proc", "tmp", "data"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sh", "cat", "head", "sleep", "echo", "mv", "ln", "ls", "rm", "touch", "mkdir"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// cgroupShape says where the fake container's cgroup goes.
type cgroupShape int

const (
	cgroupV2Docker cgroupShape = iota // 0::/system.slice/docker-<id>.scope
	cgroupV1Docker                    // N:pids:/docker/<id>
)

// startContainer starts a container with a random id and no runtime
// state files.
func startContainer(t *testing.T, root, hostname string, shape cgroupShape) *fakeContainer {
	t.Helper()
	return runContainer(t, containerSpec{root: root, hostname: hostname, shape: shape})
}

// containerSpec says how to start a fake container.
type containerSpec struct {
	root string
	// hostname is the container's name, after testRun and a dash.
	hostname string
	shape    cgroupShape
	id       string // 64 hex digits; "" for a random one
	// dockerState is written as the container's Docker state file
	// (/var/lib/docker/containers/<id>/config.v2.json) before it starts,
	// where the engine reads names and images; removed at the end. ""
	// writes one with the container's name and no image; noStateFile
	// writes none.
	dockerState string
	// init is the shell command the container's init runs after
	// "started" ("" sleeps); noInitState leaves it unrecorded by any
	// runtime.
	init        string
	noInitState bool
}

// noStateFile as a containerSpec's dockerState starts a container no
// runtime knows: the engine may name it by its short id only.
const noStateFile = "none"

// Magic numbers of the cgroup file systems (statfs f_type).
const (
	cgroupSuperMagic  = 0x27e0eb
	cgroup2SuperMagic = 0x63677270
)

// cgroupParent returns the directory the container's cgroup goes in and
// the path /proc/PID/cgroup will show for it, or makes the test
// unavailable when that hierarchy is not a cgroup file system here.
func cgroupParent(t *testing.T, shape cgroupShape, id string) (dir, line string) {
	t.Helper()
	var hier, rel string
	var magic int64
	switch shape {
	case cgroupV2Docker:
		// Hybrid layouts mount v2 at unified; pure v2 at the top.
		hier, magic, line = "/sys/fs/cgroup/unified", cgroup2SuperMagic, "0::"
		if _, err := os.Stat(hier); err != nil {
			hier = "/sys/fs/cgroup"
		}
		rel = "/system.slice/docker-" + id + ".scope"
	case cgroupV1Docker:
		hier, magic, line = "/sys/fs/cgroup/pids", cgroupSuperMagic, ":pids:"
		rel = "/docker/" + id
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(hier, &st); err != nil || int64(st.Type) != magic {
		testroot.Unavailable(t, "%s is not a cgroup hierarchy of the kind needed (statfs: %v, type %#x)", hier, err, st.Type)
	}
	return hier + rel, line + rel
}

// runContainer starts the container's init (a sleeping shell) and
// waits until it is in its namespaces and cgroup.
func runContainer(t *testing.T, spec containerSpec) *fakeContainer {
	t.Helper()
	testroot.RequireCommand(t, "unshare")
	if spec.id == "" {
		spec.id = randomID(t)
	}
	c := &fakeContainer{id: spec.id, name: testRun + "-" + spec.hostname, root: spec.root}
	var want string
	c.cgroup, want = cgroupParent(t, spec.shape, c.id)
	if err := os.MkdirAll(c.cgroup, 0o755); err != nil {
		testroot.Unavailable(t, "cannot make a cgroup here (%v)", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(c.cgroup); err != nil {
			t.Errorf("cgroup of the container left behind: %v", err)
		}
	})
	switch spec.dockerState {
	case noStateFile:
	case "":
		writeDockerState(t, c.id, fmt.Sprintf(`{"Name":"/%s","Config":{}}`, c.name))
	default:
		writeDockerState(t, c.id, spec.dockerState)
	}
	// The shell joins the cgroup, then becomes unshare, whose child is
	// the container's PID 1. As a runtime does, it makes the busybox
	// root the root of its mount namespace (pivot_root, the old root
	// unmounted), then becomes a shell of the container that stays (an
	// exec after "started" would race with the engine's reads of the
	// init). spec.init, when set, is what that shell runs first.
	if err := os.MkdirAll(filepath.Join(spec.root, ".oldroot"), 0o755); err != nil {
		t.Fatal(err)
	}
	inner := "echo started; while :; do sleep 3600; done"
	if spec.init != "" {
		inner = spec.init
	}
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec unshare --mount --pid --fork sh -c 'mount --rbind %[2]s %[2]s && mount -t proc proc %[2]s/proc && cd %[2]s && pivot_root . .oldroot && exec /bin/sh -c "/bin/busybox umount -l /.oldroot && %[3]s"'`, c.cgroup, spec.root, inner)
	c.cmd = exec.Command("sh", "-c", script)
	c.cmd.Env = []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin", "HOSTNAME=" + c.name}
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	// unshare complains when its child is killed; shown on failure only.
	var stderr testroot.Buffer
	c.cmd.Stderr = &stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Registered after the cgroup's removal, so run before it: once
	// stop has reaped unshare, which reaps the init, the cgroup is empty.
	t.Cleanup(c.stop)
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "started" {
		c.stop()
		t.Fatalf("container did not start: %q %s", line, stderr.String())
	}
	// The init is the child of unshare (pid of the sh that exec'd it).
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", c.cmd.Process.Pid, c.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(kids))
	if len(f) == 0 {
		t.Fatal("unshare has no child")
	}
	pid, _ := strconv.Atoi(f[0])
	c.pid = int32(pid)
	// The cgroup a runtime would give it (the engine does not read it).
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", c.pid))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cg), want+"\n") {
		t.Fatalf("container init is not in %s:\n%s", want, cg)
	}
	if !spec.noInitState {
		writeInitState(t, c.id, c.pid)
	}
	return c
}

// writeInitState records the container's init as runc does, in its
// default root (/run/runc/<id>/state.json): what makes the engine take
// its namespace for a container's. Removed when the test ends.
func writeInitState(t *testing.T, id string, pid int32) {
	t.Helper()
	dir := filepath.Join("/run/runc", id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	writeFile(t, filepath.Join(dir, "state.json"),
		fmt.Sprintf(`{"id":%q,"init_process_pid":%d,"init_process_start":%d}`, id, pid, startTime(t, pid)))
}

// startTime is field 22 of /proc/PID/stat.
func startTime(t *testing.T, pid int32) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// writeDockerState writes a container's config.v2.json where Docker
// keeps it on the host, and removes it (and the directories made for
// it, once empty) when the test ends.
func writeDockerState(t *testing.T, id, state string) {
	t.Helper()
	dir := filepath.Join("/var/lib/docker/containers", id)
	var made []string
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		made = append(made, d)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(filepath.Join(dir, "config.v2.json"))
		for _, d := range made {
			os.Remove(d) // only if empty: another test may use it
		}
	})
	writeFile(t, filepath.Join(dir, "config.v2.json"), state)
}

// stop kills the container and reaps it: killing the init ends its PID
// namespace, and unshare, which waits for it, reaps it and exits (before
// the init is known, the process group goes).
func (c *fakeContainer) stop() {
	if c.cmd.Process == nil || c.cmd.ProcessState != nil {
		return
	}
	if c.pid > 0 {
		syscall.Kill(int(c.pid), syscall.SIGKILL)
	} else {
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	}
	c.cmd.Wait()
}

// exec runs a command inside the container (its mount and PID
// namespaces and its root).
func (c *fakeContainer) exec(t *testing.T, args ...string) res {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	full := append([]string{"-t", strconv.Itoa(int(c.pid)), "-m", "-p", "-r", "-w", "--"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%v in the container hung", args)
	}
	return res{string(out), err}
}

// waitGroup waits until the container's group is there (or gone). It
// goes by id: other containers on the machine may have any name.
func waitGroup(t *testing.T, h *harness, c *fakeContainer, present bool) fsmon.GroupState {
	t.Helper()
	var found fsmon.GroupState
	eventually(t, fmt.Sprintf("group of %s present=%v", c.id, present), func() error {
		gs := h.Snapshot().Groups
		for _, g := range gs {
			if g.ContainerID == c.id {
				found = g
				if present {
					return nil
				}
				return fmt.Errorf("still there: %+v", gs)
			}
		}
		if !present {
			return nil
		}
		return fmt.Errorf("not there: %+v", gs)
	})
	return found
}

const containerConfig = `
profiles:
  - name: web
    containers: {name: '{run}-web-*'}
    mode: protect
    filters:
      - name: shadow
        path: /etc/shadow
        behavior: block
        allow: [head]
      - name: hosts
        path: /etc/hosts
      - name: escape
        path: /etc/escape
        behavior: block
        allow: [head]
      - name: data
        path: /data
        recursive: true
        behavior: block
        allow: [head]
`

func TestContainerIsWatchedInItsRoot(t *testing.T) {
	testroot.Require(t)
	testroot.HostShadowLock(t) // it reads the host's /etc/shadow
	root := busyboxRoot(t)
	writeFile(t, filepath.Join(root, "etc", "shadow"), "container secret\n")
	writeFile(t, filepath.Join(root, "etc", "hosts"), "127.0.0.1 localhost\n")
	// Hostile: links that point at host files by absolute path and by
	// climbing out with "..".
	os.Symlink("/etc/hostname", filepath.Join(root, "etc", "escape"))
	os.Symlink("../../../../../../../../etc", filepath.Join(root, "data", "up"))
	// A FIFO where a file is expected must not make the walk wait.
	if err := syscall.Mkfifo(filepath.Join(root, "data", "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}

	h := startScanning(t, scanForTests, containerConfig)
	c := startContainer(t, root, "web-1", cgroupV2Docker)
	g := waitGroup(t, h, c, true)
	if g.Name != c.name {
		t.Fatalf("group name %q, want %s", g.Name, c.name)
	}

	// Denied inside, with the container's id and inner paths.
	mustDeny(t, c.exec(t, "cat", "/etc/shadow"))
	ev := h.rec.waitFor(t, "denied in container", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Container.ID == c.id
	})
	if ev.Path != "/etc/shadow" || ev.Container.Name != c.name || ev.Profile != "web" || ev.Filter != "shadow" ||
		ev.Process.ExecutablePath != "/bin/busybox" || ev.Process.ExecutableName != "cat" {
		t.Errorf("event: %+v", ev)
	}
	// The allow list matches inside the container.
	r := c.exec(t, "head", "/etc/shadow")
	mustAllow(t, r)
	// Changes inside are reported with the container too.
	mustAllow(t, c.exec(t, "sh", "-c", "echo '10.1.1.1 db' >> /etc/hosts"))
	ev = h.rec.waitFor(t, "change in container", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindChange && ev.Container.ID == c.id && ev.Op == fsmon.OpWrite
	})
	if ev.Path != "/etc/hosts" || ev.Filter != "hosts" {
		t.Errorf("change: %+v", ev)
	}
	// A new directory under a recursive filter: creating a file in it is
	// an open like any other, denied to sh; one the daemon's own process
	// puts there is covered too.
	mustAllow(t, c.exec(t, "mkdir", "-p", "/data/new"))
	eventually(t, "deny of a create in a new directory", func() error {
		if r := c.exec(t, "sh", "-c", "echo k > /data/new/attempt"); r.err == nil {
			return errStillAllowed
		}
		return nil
	})
	writeFile(t, filepath.Join(root, "data", "new", "key"), "k")
	eventually(t, "deny of a new file in the container", func() error {
		if r := c.exec(t, "cat", "/data/new/key"); r.err == nil {
			return errStillAllowed
		}
		return nil
	})

	// The host's file of the same path is untouched.
	mustAllow(t, cmd(t, "cat", "/etc/shadow"))
	// The symlinks did not lead the daemon out: no host file is marked
	// or in the tables.
	for _, hostFile := range []string{"/etc/hostname", "/etc/passwd", "/etc/shadow", "/etc"} {
		var st syscall.Stat_t
		if err := syscall.Stat(hostFile, &st); err != nil {
			continue
		}
		f, d := h.marks.Entries(marks.DevIno{Dev: uint64(st.Dev), Ino: st.Ino})
		if f != nil || d != nil {
			t.Errorf("host %s is in the tables: %+v %+v", hostFile, f, d)
		}
	}
	mustAllow(t, cmd(t, "cat", "/etc/hostname"))
	// None of the host's opens was reported: a deny in the container,
	// made after them, is reported after anything they could have made.
	writeFile(t, filepath.Join(root, "data", "marker"), "m")
	mustDeny(t, c.exec(t, "cat", "/data/marker"))
	h.rec.noneBefore(t, "about host files", func(ev *fsmon.Event) bool { return ev.Container.ID == "" },
		"deny of the marker in the container", func(ev *fsmon.Event) bool {
			return ev.Kind == fsmon.KindDenied && ev.Container.ID == c.id && ev.Path == "/data/marker"
		})

	// Exit cleans up: group, marks and watches gone.
	c.stop()
	waitGroup(t, h, c, false)
	// The group is gone from the snapshot when dropGroup has taken it out
	// of the map; its entries go right after, under the same placement
	// lock.
	eventually(t, "table entries of the gone container removed", func() error {
		p := h.marks.Place()
		defer p.Done()
		var left []string
		h.marks.EachEntry(func(e *marks.Entry) {
			if !e.Group.IsHost() {
				left = append(left, e.Type.String()+" "+e.Path)
			}
		})
		if len(left) > 0 {
			return fmt.Errorf("%d entries remain: %v", len(left), left)
		}
		return nil
	})
}

func TestContainerNotSelectedIsLeftAlone(t *testing.T) {
	testroot.Require(t)
	root := busyboxRoot(t)
	writeFile(t, filepath.Join(root, "etc", "shadow"), "db secret\n")
	webRoot := busyboxRoot(t)
	writeFile(t, filepath.Join(webRoot, "etc", "shadow"), "web secret\n")
	h := startScanning(t, scanForTests, containerConfig)
	c := startContainer(t, root, "db-1", cgroupV1Docker)
	web := startContainer(t, webRoot, "web-1", cgroupV1Docker)
	// The scan has looked at db-1 and passed it over, and made a group
	// of web-1 beside it.
	waitPassedOver(t, h, c)
	waitGroup(t, h, web, true)
	for _, g := range h.Snapshot().Groups {
		if g.ContainerID == c.id {
			t.Fatalf("db-1 is watched though no profile selects it: %+v", g)
		}
	}
	mustAllow(t, c.exec(t, "cat", "/etc/shadow"))
	// Its open made no report: web-1's deny, made after it, is reported
	// after anything the open of db-1 could have made.
	mustDeny(t, web.exec(t, "cat", "/etc/shadow"))
	h.rec.noneBefore(t, "but web-1's", func(ev *fsmon.Event) bool { return ev.Container.ID != web.id },
		"deny in web-1", func(ev *fsmon.Event) bool { return ev.Kind == fsmon.KindDenied && ev.Container.ID == web.id })
}

// waitPassedOver waits until the engine's scan has looked at the
// container's mount namespace and found no profile for it (or no
// container id): it is in the engine's list of unmonitored namespaces.
func waitPassedOver(t *testing.T, h *harness, c *fakeContainer) {
	t.Helper()
	ns, err := container.FS{Root: "/proc"}.MountNS(c.pid)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "scan passes over the container", func() error {
		p := h.marks.Place()
		defer p.Done()
		if _, ok := h.unmonitored[ns]; !ok {
			return fmt.Errorf("namespace %d of %s not looked at yet", ns, c.id)
		}
		return nil
	})
}

func TestDefaultProfileCoversEveryContainer(t *testing.T) {
	testroot.Require(t)
	root := busyboxRoot(t)
	writeFile(t, filepath.Join(root, "etc", "passwd"), "root:x:0:0::/:/bin/sh\n")
	h := startScanning(t, scanForTests, `
profiles:
  - name: everywhere
    filters:
      - path: /etc/passwd
`)
	c := startContainer(t, root, "anything", cgroupV1Docker)
	waitGroup(t, h, c, true)
	mustAllow(t, c.exec(t, "sh", "-c", "echo 'x:x:1:1::/:/bin/sh' >> /etc/passwd"))
	ev := h.rec.waitFor(t, "change in container", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindChange && ev.Container.ID == c.id
	})
	if ev.Path != "/etc/passwd" || ev.Container.Name != c.name {
		t.Errorf("%+v", ev)
	}
}

// TestRestartedContainerIsWalkedAfresh: the kernel reuses mount
// namespace numbers at once, so a container replaced within one scan
// may get its predecessor's; it must still be a new group.
func TestRestartedContainerIsWalkedAfresh(t *testing.T) {
	testroot.Require(t)
	h := startScanning(t, 2*time.Second, containerConfig)
	rootA := busyboxRoot(t)
	writeFile(t, filepath.Join(rootA, "etc", "shadow"), "A\n")
	a := startContainer(t, rootA, "web-a", cgroupV2Docker)
	waitGroup(t, h, a, true)
	a.stop()
	rootB := busyboxRoot(t)
	writeFile(t, filepath.Join(rootB, "etc", "shadow"), "B\n")
	b := startContainer(t, rootB, "web-b", cgroupV2Docker)
	waitGroup(t, h, b, true)
	mustDeny(t, b.exec(t, "cat", "/etc/shadow"))
}

// TestSharedVolumeOutlivesOneContainer: two containers mount the same
// directory; when one goes, the other's protection of it stays.
func TestSharedVolumeOutlivesOneContainer(t *testing.T) {
	testroot.Require(t)
	vol := t.TempDir()
	writeFile(t, filepath.Join(vol, "secret"), "s\n")
	var cs []*fakeContainer
	h := startScanning(t, scanForTests, `
profiles:
  - name: share
    containers: {name: '{run}-share-*'}
    mode: protect
    filters:
      - name: data
        path: /data
        recursive: true
        behavior: block
        allow: [head]
`)
	for _, name := range []string{"share-a", "share-b"} {
		root := busyboxRoot(t)
		mnt := filepath.Join(root, "data")
		if out, err := exec.Command("mount", "--bind", vol, mnt).CombinedOutput(); err != nil {
			t.Fatalf("bind mount: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
		c := startContainer(t, root, name, cgroupV2Docker)
		waitGroup(t, h, c, true)
		cs = append(cs, c)
	}
	mustDeny(t, cs[1].exec(t, "cat", "/data/secret"))
	cs[0].stop()
	waitGroup(t, h, cs[0], false)
	mustDeny(t, cs[1].exec(t, "cat", "/data/secret"))
	writeFile(t, filepath.Join(vol, "later"), "l\n")
	eventually(t, "new file in the shared volume", func() error {
		if r := cs[1].exec(t, "cat", "/data/later"); r.err == nil {
			return errStillAllowed
		}
		return nil
	})
}
