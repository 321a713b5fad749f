package proctrace

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

func openTracer(t *testing.T) *Tracer {
	t.Helper()
	testroot.Require(t)
	tr, err := Open()
	if err != nil {
		testroot.Unavailable(t, "the process tracer cannot be loaded here: %v", err)
	}
	return tr
}

// TestRecordsOfOneProcess runs `sh -c 'exec env ARG; ...'`-like child
// (sh forks, execs a program with arguments and exits) and checks the
// records the kernel wrote for it: a fork by the test, an exec with the
// path, the inode of the file, the arguments, the uid, and an exit. The
// reader reads until it has seen the exit of the child: every record
// is proof of the one before, never time.
func TestRecordsOfOneProcess(t *testing.T) {
	tr := openTracer(t)
	defer tr.Close()
	got := make(chan Record, 1024)
	go func() {
		var r Record
		for {
			if err := tr.Read(&r); err != nil {
				if errors.Is(err, ErrNone) {
					continue // no record within a poll: the programs do not wake the reader
				}
				close(got)
				return
			}
			c := r
			c.Args = append([]byte(nil), r.Args...)
			got <- c
		}
	}()
	touch, err := exec.LookPath("touch")
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(touch, &st); err != nil {
		t.Fatal(err)
	}
	f := t.TempDir() + "/f"
	c := exec.Command(touch, "-c", f, "second arg")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	pid := int32(c.Process.Pid)
	c.Wait()
	var seen []Kind
	var execRec Record
	deadline := time.After(10 * time.Second)
	for len(seen) == 0 || seen[len(seen)-1] != Exit {
		select {
		case r, ok := <-got:
			if !ok {
				t.Fatal("reader ended")
			}
			if r.PID != pid {
				continue
			}
			seen = append(seen, r.Kind)
			if r.Kind == Exec {
				execRec = r
			}
			if r.Kind == Fork && r.Forker != int32(os.Getpid()) {
				t.Errorf("forked by %d, want the test %d", r.Forker, os.Getpid())
			}
		case <-deadline:
			t.Fatalf("no exit record of %d within 10s; seen %v", pid, seen)
		}
	}
	if len(seen) != 3 || seen[0] != Fork || seen[1] != Exec {
		t.Fatalf("records %v, want fork exec exit", seen)
	}
	if execRec.Path != touch {
		t.Errorf("path %q, want %q", execRec.Path, touch)
	}
	if execRec.Ino != st.Ino || execRec.Dev != st.Dev {
		t.Errorf("file %d:%d, want %d:%d", execRec.Dev, execRec.Ino, st.Dev, st.Ino)
	}
	if a := strings.Split(strings.TrimRight(string(execRec.Args), "\x00"), "\x00"); len(a) != 4 || a[3] != "second arg" || a[2] != f {
		t.Errorf("args %q", execRec.Args)
	}
	if execRec.PPID != int32(os.Getpid()) || execRec.EUID != uint32(os.Geteuid()) || execRec.Comm != "touch" {
		t.Errorf("exec record %+v", execRec)
	}
	if execRec.MntNS == 0 || execRec.Start == 0 {
		t.Errorf("exec record without namespace or start: %+v", execRec)
	}
	if tr.Published() == 0 {
		t.Error("no record counted")
	}
}
