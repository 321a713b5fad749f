package proc

import (
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// TestImageFollowsExecAndExit runs a shell that waits on a pipe and then
// execs sleep: its image is current until the exec, the new one until
// the exit, and never again after.
func TestImageFollowsExecAndExit(t *testing.T) {
	testroot.Require(t)
	fs := FS{Root: "/proc"}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command("sh", "-c", "read x; exec sleep 30")
	c.Stdin = r
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	defer c.Process.Kill()
	pid := int32(c.Process.Pid)
	before, err := fs.OpenImage(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	if !before.Current() {
		t.Fatal("the shell's image is not current while it waits")
	}
	w.Write([]byte("go\n"))
	w.Close()
	// The exec has happened once /proc/PID/exe names sleep.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var b [4096]byte
		exe, _ := fs.ReadExe(pid, b[:])
		if string(exe) == "/usr/bin/sleep" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no exec of sleep: exe %q", exe)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if before.Current() {
		t.Fatal("the image from before the exec is still current")
	}
	after, err := fs.OpenImage(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Current() {
		t.Fatal("the image after the exec is not current")
	}
	same, err := SharesMM(pid, pid)
	if err != nil || !same {
		t.Fatalf("SharesMM(pid, pid) = %v, %v", same, err)
	}
	if same, err := SharesMM(pid, int32(os.Getpid())); err != nil || same {
		t.Fatalf("SharesMM(child, us) = %v, %v", same, err)
	}

	pf, err := OpenPidfd(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	in, err := pf.Info()
	if errors.Is(err, ErrNoPidfdInfo) {
		t.Log("PIDFD_GET_INFO not available: Info not checked")
	} else if err != nil {
		t.Fatal(err)
	} else if in.PPID != int32(os.Getpid()) || in.EUID != int64(os.Geteuid()) {
		t.Fatalf("Info = %+v, want ppid %d euid %d", in, os.Getpid(), os.Geteuid())
	}

	c.Process.Kill()
	c.Wait()
	if after.Current() {
		t.Fatal("the image is current after the exit")
	}
	if _, err := pf.Info(); !errors.Is(err, ErrNoPidfdInfo) && !errors.Is(err, unix.ESRCH) {
		t.Fatalf("Info after the exit: %v, want ESRCH", err)
	}
	if _, err := fs.OpenImage(pid); err == nil {
		t.Fatal("an image of a reaped process opened")
	}
}

// BenchmarkImageCurrent and BenchmarkStatExe compare what an allowed
// decision pays to know who opens, with and without the cache.
func BenchmarkImageCurrent(b *testing.B) {
	testroot.Require(b)
	im, err := FS{Root: "/proc"}.OpenImage(int32(os.Getpid()))
	if err != nil {
		b.Fatal(err)
	}
	defer im.Close()
	for b.Loop() {
		if !im.Current() {
			b.Fatal("our own image is not current")
		}
	}
}

func BenchmarkStatExe(b *testing.B) {
	fs := FS{Root: "/proc"}
	pid := int32(os.Getpid())
	var st unix.Stat_t
	for b.Loop() {
		if err := fs.StatExe(pid, &st); err != nil {
			b.Fatal(err)
		}
	}
}
