package container

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

const id = "3f1a9c2b7d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"

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

// TestNamespaceRootIsNotTheInitsRoot: a process in a mount namespace of
// its own that has only chrooted into a directory (as a container's init
// that hides its files behind a decoy) has that directory as its
// /proc/PID/root, but the namespace's root is still the one it was made
// with: OpenNSRoot opens that, and reads its namespace like any other.
func TestNamespaceRootIsNotTheInitsRoot(t *testing.T) {
	testroot.Require(t)
	testroot.RequireCommand(t, "unshare")
	bb := testroot.RequireCommand(t, "busybox")
	decoy := t.TempDir()
	if err := os.MkdirAll(decoy+"/bin", 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(decoy+"/bin/busybox", b, 0o755); err != nil {
		t.Fatal(err)
	}
	c := exec.Command("unshare", "--mount", "--root="+decoy, "/bin/busybox", "sh", "-c", "echo started; while :; do /bin/busybox sleep 3600; done")
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "started\n" {
		t.Fatalf("did not start: %q", line)
	}
	pid := int32(c.Process.Pid)
	fs := FS{Root: "/proc"}
	self, err := fs.MountNS(int32(os.Getpid()))
	if err != nil {
		testroot.Unavailable(t, "cannot read own mount namespace: %v", err)
	}
	inner, err := fs.MountNS(pid)
	if err != nil || inner == self {
		t.Fatalf("namespace of %d: %d %v (ours %d)", pid, inner, err, self)
	}
	fd, err := OpenNSRoot("/proc", pid)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	var got, host, own syscall.Stat_t
	if err := syscall.Fstat(fd, &got); err != nil {
		t.Fatal(err)
	}
	syscall.Stat("/", &host)
	syscall.Stat(fmt.Sprintf("/proc/%d/root", pid), &own)
	if got.Dev != host.Dev || got.Ino != host.Ino {
		t.Errorf("root of the namespace is %d:%d, want the one it was made with, %d:%d", got.Dev, got.Ino, host.Dev, host.Ino)
	}
	if own.Ino == host.Ino && own.Dev == host.Dev {
		t.Fatal("the process did not chroot")
	}
	// The daemon's own threads stay where they were.
	if now, _ := fs.MountNS(int32(os.Getpid())); now != self {
		t.Errorf("our mount namespace changed: %d, was %d", now, self)
	}
}

// TestInitsOfTheRuntimesLayouts: the records of each runtime's runc
// root are read, by the init's pid; a directory without its state yet,
// one named by no id, and a record of another id are passed over; a
// record that goes is forgotten.
func TestInitsOfTheRuntimesLayouts(t *testing.T) {
	root := t.TempDir()
	ids := map[string]string{}
	write := func(dir, id, body string) {
		t.Helper()
		d := root + "/" + dir + "/" + id
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if body != "" {
			if err := os.WriteFile(d+"/state.json", []byte(body), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	state := func(id string, pid int) string {
		return fmt.Sprintf(`{"id":"%s","init_process_pid":%d,"init_process_start":%d,"config":{"rootfs":"/x"}}`, id, pid, 1000+pid)
	}
	for i, dir := range []string{"run/docker/runtime-runc/moby", "run/containerd/runc/k8s.io", "run/containerd/runc/default", "run/runc"} {
		cid := strings.Repeat(strconv.Itoa(i+1), 64)
		ids[dir] = cid
		write(dir, cid, state(cid, 100+i))
	}
	write("run/runc", strings.Repeat("a", 64), "")                                  // not written yet
	write("run/runc", "not-an-id", state("not-an-id", 200))                         // no id
	write("run/runc", strings.Repeat("b", 64), state(strings.Repeat("c", 64), 201)) // another's
	in := &Inits{Root: root}
	got := in.ByPID()
	want := map[int32]Init{
		100: {ids["run/docker/runtime-runc/moby"], RuntimeDocker, 100, 1100},
		101: {ids["run/containerd/runc/k8s.io"], RuntimeKubernetes, 101, 1101},
		102: {ids["run/containerd/runc/default"], RuntimeContainerd, 102, 1102},
		103: {ids["run/runc"], RuntimeRunc, 103, 1103},
	}
	if len(got) != len(want) {
		t.Errorf("ByPID = %v, want %v", got, want)
	}
	for pid, w := range want {
		if got[pid] != w {
			t.Errorf("pid %d: %+v, want %+v", pid, got[pid], w)
		}
	}
	// Written later: read at the next look.
	write("run/runc", strings.Repeat("a", 64), state(strings.Repeat("a", 64), 300))
	os.RemoveAll(root + "/run/runc/" + ids["run/runc"])
	got = in.ByPID()
	if got[300].ID != strings.Repeat("a", 64) {
		t.Errorf("a record written later not read: %v", got)
	}
	if _, ok := got[103]; ok {
		t.Errorf("a record that went is still there: %v", got)
	}
}

func FuzzParseInitState(f *testing.F) {
	f.Add([]byte(`{"id":"` + id + `","init_process_pid":7,"init_process_start":9}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		in, ok := ParseInitState(b, id, RuntimeRunc)
		if ok && (in.ID != id || in.PID <= 0 || in.Start == 0) {
			t.Fatalf("%+v", in)
		}
	})
}
