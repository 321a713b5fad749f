package container

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

const id = "3f1a9c2b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"

func TestParseCgroup(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		rt       Runtime
		id       string
	}{
		{"docker v2", "0::/system.slice/docker-" + id + ".scope\n", RuntimeDocker, id},
		{"docker v1", "12:pids:/docker/" + id + "\n11:memory:/docker/" + id + "\n", RuntimeDocker, id},
		{"containerd v2", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-" + id + ".scope\n", RuntimeContainerd, id},
		{"crio v2", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podab.slice/crio-" + id + ".scope\n", RuntimeCRIO, id},
		{"crio conmon", "0::/kubepods.slice/crio-conmon-" + id + ".scope\n", RuntimeUnknown, ""},
		{"podman", "0::/machine.slice/libpod-" + id + ".scope/container\n", RuntimePodman, id},
		{"kubepods v1 cgroupfs", "4:memory:/kubepods/besteffort/pod8c0a1f2e-3b4c-4d5e-8f90-a1b2c3d4e5f6/" + id + "\n", RuntimeKubernetes, id},
		{"host", "0::/init.scope\n4:memory:/user.slice\n", RuntimeUnknown, ""},
		{"short hex is not an id", "0::/docker-abcdef.scope\n", RuntimeUnknown, ""},
		{"garbage", "\x00\xff::::\n", RuntimeUnknown, ""},
	} {
		rt, got := ParseCgroup([]byte(tc.in))
		if rt != tc.rt || got != tc.id {
			t.Errorf("%s: got (%q, %q), want (%q, %q)", tc.name, rt, got, tc.rt, tc.id)
		}
	}
}

func FuzzParseCgroup(f *testing.F) {
	f.Add([]byte("0::/system.slice/docker-" + id + ".scope\n"))
	f.Add([]byte("12:pids:/docker/" + id))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, got := ParseCgroup(b)
		if got != "" && len(got) != 64 {
			t.Fatalf("id %q", got)
		}
	})
}

func TestNamespacesOfThisMachine(t *testing.T) {
	ns, err := FS{Root: "/proc"}.Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	self, err := FS{Root: "/proc"}.MountNS(int32(os.Getpid()))
	if err != nil {
		testroot.Unavailable(t, "cannot read own mount namespace: %v", err)
	}
	found := false
	for _, p := range ns[self] {
		if p == int32(os.Getpid()) {
			found = true
		}
	}
	if !found {
		t.Fatalf("own pid not in own namespace group: %v", ns[self])
	}
}

func TestParseNSpidInit(t *testing.T) {
	if !ParseNSpidInit([]byte("Name:\tsh\nNSpid:\t4242\t1\nNSpgid:\t1\n")) {
		t.Error("container init not recognised")
	}
	if ParseNSpidInit([]byte("Name:\tinit\nNSpid:\t1\n")) {
		t.Error("the host's init is not a container's")
	}
	if ParseNSpidInit([]byte("Name:\tsh\nNSpid:\t4242\t7\n")) {
		t.Error("pid 7 taken for an init")
	}
}

// TestReadsOfARealProcess reads what the engine reads of a process in
// a Docker-shaped cgroup (v1 pids:/docker/<id>, which this machine has)
// and in mount and PID namespaces of its own: its container id, its
// namespace apart from ours, whether it is its namespace's init.
func TestReadsOfARealProcess(t *testing.T) {
	testroot.Require(t)
	testroot.RequireCommand(t, "unshare")
	var st syscall.Statfs_t
	const cgroupSuperMagic = 0x27e0eb
	if err := syscall.Statfs("/sys/fs/cgroup/pids", &st); err != nil || st.Type != cgroupSuperMagic {
		testroot.Unavailable(t, "no cgroup v1 pids hierarchy at /sys/fs/cgroup/pids (%v, type %#x)", err, st.Type)
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	cid := hex.EncodeToString(b)
	cg := "/sys/fs/cgroup/pids/docker/" + cid
	if err := os.MkdirAll(cg, 0o755); err != nil {
		testroot.Unavailable(t, "cannot make a cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := os.Remove(cg); err != nil {
			t.Errorf("cgroup left behind: %v", err)
		}
	})
	// The inner shell stays the init: an exec after "started" would race
	// with the reads below (the environment is empty during an exec).
	c := exec.Command("sh", "-c", "echo $$ > "+cg+"/cgroup.procs && exec unshare --mount --pid --fork sh -c 'echo started; while :; do sleep 3600; done'")
	c.Env = []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin", "HOSTNAME=real-1"}
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	unsharePID := int32(c.Process.Pid)
	var initPID int32
	t.Cleanup(func() {
		// The init's end ends its namespace; unshare reaps it and exits.
		if initPID > 0 {
			syscall.Kill(int(initPID), syscall.SIGKILL)
		} else {
			c.Process.Kill()
		}
		c.Wait()
	})
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "started\n" {
		t.Fatalf("did not start: %q", line)
	}
	kids, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", unsharePID, unsharePID))
	if err != nil || len(strings.Fields(string(kids))) == 0 {
		t.Fatalf("children of unshare: %q %v", kids, err)
	}
	n, _ := strconv.Atoi(strings.Fields(string(kids))[0])
	initPID = int32(n)

	fs := FS{Root: "/proc"}
	for _, pid := range []int32{unsharePID, initPID} {
		rt, got, err := fs.ID(pid)
		if err != nil || rt != RuntimeDocker || got != cid {
			t.Errorf("ID(%d) = %q, %q, %v; want docker, %s", pid, rt, got, err, cid)
		}
	}
	if _, got, err := fs.ID(int32(os.Getpid())); err != nil || got != "" {
		t.Errorf("our own id: %q %v", got, err)
	}
	if !fs.IsNamespaceInit(initPID) {
		t.Error("the init of the new PID namespace not recognised")
	}
	if fs.IsNamespaceInit(unsharePID) {
		t.Error("unshare, which stays in our PID namespace, taken for an init")
	}
	self, err := fs.MountNS(int32(os.Getpid()))
	if err != nil {
		testroot.Unavailable(t, "cannot read own mount namespace: %v", err)
	}
	inner, err := fs.MountNS(initPID)
	if err != nil {
		t.Fatal(err)
	}
	nss, err := fs.Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	if inner == self || !slices.Contains(nss[inner], initPID) || slices.Contains(nss[self], initPID) {
		t.Errorf("namespaces: ours %d, the init's %d; grouped %v / %v", self, inner, nss[self], nss[inner])
	}
}
