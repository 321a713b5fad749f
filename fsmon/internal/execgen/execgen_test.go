package execgen

import (
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// TestCounts runs a shell that waits, renames itself, execs sleep and
// exits, and checks its slot moves at each step and not while it waits.
func TestCounts(t *testing.T) {
	testroot.Require(t)
	c, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.links) != len(Tracepoints) {
		t.Fatalf("%d links, want one per tracepoint %v", len(c.links), Tracepoints)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	sh := exec.Command("sh", "-c", "read x; exec sleep 30")
	sh.Stdin = r
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer sh.Process.Kill()
	pid := int32(sh.Process.Pid)
	waitMoved := func(what string, from uint64) uint64 {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for c.Gen(pid) == from {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the slot of pid %d did not move from %d", what, pid, from)
			}
			time.Sleep(time.Millisecond)
		}
		return c.Gen(pid)
	}
	// The shell's own exec (from the Go child) may land before or after
	// Open; let it settle, then expect quiet.
	time.Sleep(50 * time.Millisecond)
	g := c.Gen(pid)
	time.Sleep(50 * time.Millisecond)
	if c.Gen(pid) != g {
		t.Skipf("another process shares slot %d and is busy: nothing to conclude", uint32(pid)&(Slots-1))
	}
	w.Write([]byte("go\n"))
	w.Close()
	g = waitMoved("exec", g)
	sh.Process.Kill()
	sh.Wait()
	waitMoved("exit", g)

	// A rename of our own thread moves our slot.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self := int32(os.Getpid())
	g = c.Gen(self)
	name := []byte("execgen-test\x00")
	if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	if c.Gen(self) == g {
		t.Fatal("a rename did not move the slot at once")
	}
}

func BenchmarkGen(b *testing.B) {
	testroot.Require(b)
	c, err := Open()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for b.Loop() {
		c.Gen(12345)
	}
}
