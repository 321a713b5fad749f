package engine

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// Containers that lie, as their root user can: nothing in a container
// decides who it is, what its root is, or whether it is watched.

// hostileConfig protects /etc/shadow in the containers of one name.
const hostileConfig = `
profiles:
  - name: strict
    containers: {name: '{run}-%s'}
    mode: protect
    filters:
      - name: shadow
        path: /etc/shadow
        behavior: block
        allow: [head]
`

// execInNS runs a command in the container's mount and PID namespaces
// with the namespace's root, as a runtime's exec does: not its init's
// root (nsenter -r), which a chroot of the init can make a decoy.
func (c *fakeContainer) execInNS(t *testing.T, args ...string) res {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	full := append([]string{"-t", strconv.Itoa(int(c.pid)), "-m", "-p", "--"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%v in the container hung", args)
	}
	return res{string(out), err}
}

// TestDecoyChrootDoesNotHideTheContainersFiles: the container's init
// chroots into a decoy directory before the engine looks at it. The
// container's root is still its mount namespace's, so the real
// /etc/shadow is marked and denied to what the runtime starts in the
// container, and the decoy's is not taken for it.
func TestDecoyChrootDoesNotHideTheContainersFiles(t *testing.T) {
	testroot.Require(t)
	root := busyboxRoot(t)
	writeFile(t, filepath.Join(root, "etc", "shadow"), "real secret\n")
	c := runContainer(t, containerSpec{root: root, hostname: "decoy", shape: cgroupV2Docker,
		init: "/bin/busybox mkdir -p /decoy/bin /decoy/etc && /bin/busybox cp /bin/busybox /decoy/bin/ && echo decoy > /decoy/etc/shadow && echo started && exec /bin/busybox chroot /decoy /bin/busybox sh -c \\\"while :; do /bin/busybox sleep 3600; done\\\""})
	// The init is in the decoy before the engine starts.
	eventually(t, "the init in its decoy", func() error {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/root", c.pid))
		if err != nil || !strings.HasSuffix(l, "/decoy") {
			return fmt.Errorf("root of the init: %q %v", l, err)
		}
		return nil
	})
	h := startScanning(t, scanForTests, fmt.Sprintf(hostileConfig, "decoy"))
	waitGroup(t, h, c, true)
	r := c.execInNS(t, "/bin/cat", "/etc/shadow")
	mustDeny(t, r)
	if strings.Contains(r.out, "real secret") {
		t.Fatalf("the real file was read: %q", r.out)
	}
	mustAllow(t, c.execInNS(t, "/bin/head", "/etc/shadow"))
	ev := h.rec.waitFor(t, "deny of the real file", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Container.ID == c.id
	})
	if ev.Path != "/etc/shadow" {
		t.Errorf("deny reported at %q, want /etc/shadow", ev.Path)
	}
	// The decoy's file is not the container's /etc/shadow.
	mustAllow(t, c.exec(t, "/bin/busybox", "cat", "/etc/shadow"))
}

// TestCgroupMoveDoesNotChangeWhoAContainerIs: a container (root with
// CAP_SYS_ADMIN can) moves its init into another container's cgroup,
// and another one into the host's root cgroup, before the engine looks.
// Each is still known by the runtime's record of its init: its own id
// and name, its own profile, denied.
func TestCgroupMoveDoesNotChangeWhoAContainerIs(t *testing.T) {
	testroot.Require(t)
	victimRoot := busyboxRoot(t)
	victim := startContainer(t, victimRoot, "victim", cgroupV2Docker)
	root := busyboxRoot(t)
	writeFile(t, filepath.Join(root, "etc", "shadow"), "secret\n")
	mover := startContainer(t, root, "mover", cgroupV2Docker)
	hostRoot := busyboxRoot(t)
	writeFile(t, filepath.Join(hostRoot, "etc", "shadow"), "secret\n")
	toHost := startContainer(t, hostRoot, "mover-host", cgroupV2Docker)
	writeFile(t, victim.cgroup+"/cgroup.procs", strconv.Itoa(int(mover.pid)))
	rootCgroup := filepath.Dir(filepath.Dir(victim.cgroup))
	writeFile(t, rootCgroup+"/cgroup.procs", strconv.Itoa(int(toHost.pid)))
	t.Cleanup(func() {
		// Back, so that each cgroup can be removed.
		os.WriteFile(mover.cgroup+"/cgroup.procs", []byte(strconv.Itoa(int(mover.pid))), 0)
		os.WriteFile(toHost.cgroup+"/cgroup.procs", []byte(strconv.Itoa(int(toHost.pid))), 0)
	})
	for _, c := range []*fakeContainer{mover, toHost} {
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", c.pid))
		if strings.Contains(string(cg), c.id) {
			t.Fatalf("the init of %s did not move: %s", c.name, cg)
		}
	}
	h := startScanning(t, scanForTests, fmt.Sprintf(hostileConfig, "mover*"))
	for _, c := range []*fakeContainer{mover, toHost} {
		if g := waitGroup(t, h, c, true); g.Name != c.name {
			t.Errorf("group of %s named %q", c.id, g.Name)
		}
		mustDeny(t, c.exec(t, "cat", "/etc/shadow"))
		h.rec.waitFor(t, "deny named by its own id", func(ev *fsmon.Event) bool {
			return ev.Kind == fsmon.KindDenied && ev.Container.ID == c.id && ev.Container.Name == c.name
		})
	}
	for _, ev := range h.rec.all() {
		if ev.Container.ID == victim.id {
			t.Errorf("an event named the container whose cgroup was taken: %+v", ev)
		}
	}
}

// TestNamespaceMadeInsideAContainerIsStillIts: a process of the
// container makes a mount namespace of its own, and a PID namespace
// below the container's (unshare, as root with CAP_SYS_ADMIN inside
// can). No group was made for that namespace, yet its processes are the
// container's, judged by its profile, never as the host.
func TestNamespaceMadeInsideAContainerIsStillIts(t *testing.T) {
	testroot.Require(t)
	root := busyboxRoot(t)
	writeFile(t, filepath.Join(root, "etc", "shadow"), "secret\n")
	c := startContainer(t, root, "nested", cgroupV2Docker)
	h := startScanning(t, scanForTests, fmt.Sprintf(hostileConfig, "nested"))
	waitGroup(t, h, c, true)
	mustDeny(t, c.exec(t, "/bin/busybox", "unshare", "-m", "-p", "-f", "/bin/cat", "/etc/shadow"))
	mustDeny(t, c.exec(t, "/bin/busybox", "unshare", "-m", "/bin/cat", "/etc/shadow"))
	mustAllow(t, c.exec(t, "/bin/busybox", "unshare", "-m", "/bin/head", "/etc/shadow"))
	h.rec.waitFor(t, "deny in the nested namespace named by the container", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Container.ID == c.id
	})
}

// TestContainerFoundByItsExec: with the periodic scan hours away, a
// container is found when a program runs in its namespace (the process
// table's exec events), not at the next tick.
func TestContainerFoundByItsExec(t *testing.T) {
	testroot.Require(t)
	root := busyboxRoot(t)
	writeFile(t, filepath.Join(root, "etc", "shadow"), "secret\n")
	h := startScanning(t, time.Hour, fmt.Sprintf(hostileConfig, "execd"))
	if h.procs == nil {
		testroot.Unavailable(t, "no process table here (its BPF programs did not load): no exec events")
	}
	c := startContainer(t, root, "execd", cgroupV2Docker)
	// The runtime's record is there now; the next program run inside is
	// what the engine follows.
	mustAllow(t, c.exec(t, "/bin/busybox", "true"))
	waitGroup(t, h, c, true)
	mustDeny(t, c.exec(t, "cat", "/etc/shadow"))
}
