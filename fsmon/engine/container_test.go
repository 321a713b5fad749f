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
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// fakeContainer is the nearest real thing to a container this machine
// can run: a busybox root file system, a process in new mount and PID
// namespaces whose root is that file system (unshare --root), in a
// cgroup whose path has the shape a runtime gives it.
type fakeContainer struct {
	id     string
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

// startContainer starts the container's init (a sleeping shell) and
// waits until it is in its namespaces and cgroup.
func startContainer(t *testing.T, root, hostname string, shape cgroupShape) *fakeContainer {
	t.Helper()
	testroot.RequireCommand(t, "unshare")
	c := &fakeContainer{id: randomID(t), root: root}
	switch shape {
	case cgroupV2Docker:
		c.cgroup = "/sys/fs/cgroup/unified/system.slice/docker-" + c.id + ".scope"
		if _, err := os.Stat("/sys/fs/cgroup/unified"); err != nil {
			c.cgroup = "/sys/fs/cgroup/system.slice/docker-" + c.id + ".scope"
		}
	case cgroupV1Docker:
		c.cgroup = "/sys/fs/cgroup/pids/docker/" + c.id
	}
	if err := os.MkdirAll(c.cgroup, 0o755); err != nil {
		t.Skipf("cannot make a cgroup here (%v)", err)
	}
	// The shell joins the cgroup, then becomes unshare, whose child is
	// the container's PID 1 with the busybox root.
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec unshare --mount --pid --fork --mount-proc --root=%s /bin/sh -c 'echo started; exec sleep 3600'`, c.cgroup, root)
	c.cmd = exec.Command("sh", "-c", script)
	c.cmd.Env = []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin", "HOSTNAME=" + hostname}
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	c.cmd.Stderr = os.Stderr
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.stop()
		// The cgroup empties once the killed processes are reaped.
		for i := 0; i < 50 && os.Remove(c.cgroup) != nil; i++ {
			time.Sleep(20 * time.Millisecond)
		}
	})
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "started" {
		t.Fatalf("container did not start: %q", line)
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
	return c
}

func (c *fakeContainer) stop() {
	if c.cmd.Process != nil {
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		if c.pid > 0 {
			syscall.Kill(int(c.pid), syscall.SIGKILL)
		}
		c.cmd.Wait()
	}
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
	deadline := time.Now().Add(10 * time.Second)
	for {
		found := false
		for _, g := range h.Snapshot().Groups {
			if g.ContainerID == c.id {
				if present {
					return g
				}
				found = true
			}
		}
		if !present && !found {
			return fsmon.GroupState{}
		}
		if time.Now().After(deadline) {
			t.Fatalf("group of %s present=%v not reached within 10s: %+v", c.id, present, h.Snapshot().Groups)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const containerConfig = `
profiles:
  - name: web
    containers: {name: 'web-*'}
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

	h := start(t, containerConfig, func(o *Options) { o.ContainerScan = 200 * time.Millisecond })
	c := startContainer(t, root, "web-1", cgroupV2Docker)
	g := waitGroup(t, h, c, true)
	if g.Name != "web-1" {
		t.Fatalf("group name %q, want web-1", g.Name)
	}

	// Denied inside, with the container's id and inner paths.
	mustDeny(t, c.exec(t, "cat", "/etc/shadow"))
	ev := h.rec.waitFor(t, "denied in container", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Container.ID == c.id
	})
	if ev.Path != "/etc/shadow" || ev.Container.Name != "web-1" || ev.Profile != "web" || ev.Filter != "shadow" ||
		ev.Process.ExecutablePath != "/bin/busybox" || ev.Process.ExecutableName != "cat" {
		t.Errorf("event: %+v", ev)
	}
	// The allow list matches inside the container.
	r := c.exec(t, "head", "/etc/shadow")
	mustAllow(t, r)
	// Changes inside are reported with the container too.
	mustAllow(t, c.exec(t, "sh", "-c", "echo '10.1.1.1 db' >> /etc/hosts; sleep 0.3"))
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
		id := devIno{uint64(st.Dev), st.Ino}
		h.mu.RLock()
		f, d := h.tables.files[id], h.tables.dirs[id]
		h.mu.RUnlock()
		if f != nil || d != nil {
			t.Errorf("host %s is in the tables: %+v %+v", hostFile, f, d)
		}
	}
	mustAllow(t, cmd(t, "cat", "/etc/hostname"))
	h.rec.none(t, "about host files", func(ev *fsmon.Event) bool { return ev.Container.ID == "" })

	// Exit cleans up: group, marks and watches gone.
	c.stop()
	waitGroup(t, h, c, false)
	// The group is gone from the snapshot when dropGroup has taken it out
	// of the map; its entries go right after, under the same lock.
	eventually(t, "table entries of the gone container removed", func() error {
		h.applyMu.Lock()
		defer h.applyMu.Unlock()
		h.mu.RLock()
		defer h.mu.RUnlock()
		var left []string
		for _, d := range h.tables.dirs {
			if !d.g.isHost() {
				left = append(left, "dir "+d.path)
			}
		}
		for _, f := range h.tables.files {
			if !f.g.isHost() {
				left = append(left, "file "+f.path)
			}
		}
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
	h := start(t, containerConfig, func(o *Options) { o.ContainerScan = 200 * time.Millisecond })
	c := startContainer(t, root, "db-1", cgroupV1Docker)
	// Give discovery a few rounds.
	time.Sleep(800 * time.Millisecond)
	for _, g := range h.Snapshot().Groups {
		if g.ContainerID == c.id {
			t.Fatalf("db-1 is watched though no profile selects it: %+v", g)
		}
	}
	mustAllow(t, c.exec(t, "cat", "/etc/shadow"))
}

func TestDefaultProfileCoversEveryContainer(t *testing.T) {
	testroot.Require(t)
	root := busyboxRoot(t)
	writeFile(t, filepath.Join(root, "etc", "passwd"), "root:x:0:0::/:/bin/sh\n")
	h := start(t, `
profiles:
  - name: everywhere
    filters:
      - path: /etc/passwd
`, func(o *Options) { o.ContainerScan = 200 * time.Millisecond })
	c := startContainer(t, root, "anything", cgroupV1Docker)
	waitGroup(t, h, c, true)
	mustAllow(t, c.exec(t, "sh", "-c", "echo 'x:x:1:1::/:/bin/sh' >> /etc/passwd; sleep 0.3"))
	ev := h.rec.waitFor(t, "change in container", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindChange && ev.Container.ID == c.id
	})
	if ev.Path != "/etc/passwd" || ev.Container.Name != "anything" {
		t.Errorf("%+v", ev)
	}
}

// TestHostFileReachedFromAContainer: a host file a container reaches
// through a bind mount is protected by the host's rules there too.
func TestHostFileReachedFromAContainer(t *testing.T) {
	testroot.Require(t)
	hostDir := t.TempDir()
	secret := filepath.Join(hostDir, "secret")
	writeFile(t, secret, "host secret\n")
	root := busyboxRoot(t)
	writeFile(t, filepath.Join(root, "etc", "passwd"), "root:x:0:0::/:/bin/sh\n")
	mnt := filepath.Join(root, "hostdir")
	os.MkdirAll(mnt, 0o755)
	if out, err := exec.Command("mount", "--bind", hostDir, mnt).CombinedOutput(); err != nil {
		t.Fatalf("bind mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	h := start(t, fmt.Sprintf(`
profiles:
  - name: host
    host: true
    mode: protect
    filters:
      - name: secret
        path: %s
        behavior: block
        allow: [/usr/bin/head]
  - name: every-container
    containers: {name: '*'}
    filters:
      - path: /etc/passwd
`, secret), func(o *Options) { o.ContainerScan = 200 * time.Millisecond })
	c := startContainer(t, root, "bind-1", cgroupV2Docker)
	waitGroup(t, h, c, true)
	mustDeny(t, c.exec(t, "cat", "/hostdir/secret"))
	ev := h.rec.waitFor(t, "denied from the container", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Container.ID == c.id
	})
	if ev.Profile != "host" || ev.Filter != "secret" || ev.Container.Name != "bind-1" {
		t.Errorf("%+v", ev)
	}
	mustDeny(t, cmd(t, "cat", secret))
}

// TestRestartedContainerIsWalkedAfresh: the kernel reuses mount
// namespace numbers at once, so a container replaced within one scan
// may get its predecessor's; it must still be a new group.
func TestRestartedContainerIsWalkedAfresh(t *testing.T) {
	testroot.Require(t)
	h := start(t, containerConfig, func(o *Options) { o.ContainerScan = 2 * time.Second })
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
	h := start(t, `
profiles:
  - name: share
    containers: {name: 'share-*'}
    mode: protect
    filters:
      - name: data
        path: /data
        recursive: true
        behavior: block
        allow: [head]
`, func(o *Options) { o.ContainerScan = 200 * time.Millisecond })
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
