package execgen

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// TestCounts runs a shell that prints, reads and prints again, then
// execs cat and is killed, and checks that its slot stays put while it
// only reads and writes and moves at the exec and at the exit. Each step
// is known to be over from what the child prints (a line printed by a
// program proves its exec has returned, hence been counted) or from its
// reaping (its exit was counted inside do_exit), never from time.
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
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer inW.Close()
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer outR.Close()
	sh := exec.Command("sh", "-c", "echo ready; read x; echo quiet; read y; exec cat")
	sh.Stdin, sh.Stdout, sh.Stderr = inR, outW, outW
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	outW.Close()
	defer func() { sh.Process.Kill(); sh.Wait() }()
	pid := int32(sh.Process.Pid)
	out := bufio.NewReader(outR)
	expect := func(want string) {
		t.Helper()
		outR.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := out.ReadString('\n')
		if strings.TrimSuffix(line, "\n") != want {
			t.Fatalf("the shell printed %q (%v), want %q", line, err, want)
		}
	}
	send := func(line string) {
		t.Helper()
		if _, err := inW.WriteString(line + "\n"); err != nil {
			t.Fatal(err)
		}
	}

	expect("ready") // the shell runs: its exec is counted
	g := c.Gen(pid)
	send("a")
	expect("quiet") // it has read and written, nothing else
	if c.Gen(pid) != g {
		if max := pidMax(t); max > Slots {
			testroot.Unavailable(t, "slot %d moved while its shell only read and wrote: with pid_max %d above %d slots another process may share it", uint32(pid)&(Slots-1), max, Slots)
		}
		t.Fatalf("slot %d moved from %d to %d while the shell only read and wrote", uint32(pid)&(Slots-1), g, c.Gen(pid))
	}
	// The shell reads its line byte by byte and execs cat, which echoes
	// the next one.
	send("b")
	send("cat")
	expect("cat")
	if c.Gen(pid) == g {
		t.Fatalf("the exec of cat did not move the slot of pid %d from %d", pid, g)
	}
	g = c.Gen(pid)
	sh.Process.Kill()
	sh.Wait()
	if c.Gen(pid) == g {
		t.Fatalf("the exit of pid %d did not move its slot from %d", pid, g)
	}

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

// pidMax is the largest pid plus one: with no more than Slots of them,
// no two processes share a slot.
func pidMax(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
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
