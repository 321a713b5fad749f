package proc

import (
	"errors"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// TestPidfdInfo: a child's parent and user through its pidfd, and ESRCH
// once it has exited.
func TestPidfdInfo(t *testing.T) {
	testroot.Require(t)
	c := exec.Command("sleep", "30")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer c.Process.Kill()
	pf, err := OpenPidfd(int32(c.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	in, err := pf.Info()
	if errors.Is(err, ErrNoPidfdInfo) {
		testroot.Unavailable(t, "PIDFD_GET_INFO not available (Linux 6.13): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if in.PPID != int32(os.Getpid()) || in.EUID != int64(os.Geteuid()) {
		t.Fatalf("Info = %+v, want ppid %d euid %d", in, os.Getpid(), os.Geteuid())
	}
	c.Process.Kill()
	c.Wait()
	if _, err := pf.Info(); !errors.Is(err, unix.ESRCH) {
		t.Fatalf("Info after the exit: %v, want ESRCH", err)
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
