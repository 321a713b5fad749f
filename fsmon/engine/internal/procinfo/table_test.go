package procinfo

import (
	"log/slog"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proctrace"
)

// bareTable is a table without the kernel's programs, fed records by
// the test. Its pids are far above pid_max, so that reading /proc for
// an unknown one finds nothing.
func bareTable(size int, retention time.Duration) *Table {
	return &Table{
		log: slog.New(slog.DiscardHandler), fs: proc.FS{Root: "/proc"}, max: size, retention: retention,
		m: map[int32]*Proc{}, progress: make(chan struct{}),
	}
}

const far = 1 << 30 // above any pid_max

func execRec(pid, ppid int32, start uint64, path, args string) *proctrace.Record {
	return &proctrace.Record{Kind: proctrace.Exec, PID: pid, PPID: ppid, Start: start, Path: path, Comm: path[len(path)-2:], Args: []byte(args)}
}

// TestTableForkExecExit: a fork copies the forker's program to the
// child with the child's own pid and parent; an exec replaces it and
// keeps the parent's facts as they were; an exit marks the record
// exited, kept, and an exit of another process with the same pid (an
// older start) does not.
func TestTableForkExecExit(t *testing.T) {
	tb := bareTable(16, time.Minute)
	now := time.Unix(1000, 0)
	tb.apply(execRec(far+1, far, 10, "/bin/sh", "sh\x00-c\x00x\x00"), now)
	tb.apply(&proctrace.Record{Kind: proctrace.Fork, PID: far + 2, PPID: far + 1, Forker: far + 1, Start: 20, EUID: 7}, now)
	c, ok := tb.Get(far + 2)
	if !ok || c.ExecPath != "/bin/sh" || c.Cmdline != "sh -c x" || c.PPID != far+1 || c.UID != 7 || c.Parent.Cmdline != "sh -c x" {
		t.Fatalf("forked child %+v %v", c, ok)
	}
	tb.apply(execRec(far+2, far+1, 20, "/bin/ls", "ls\x00-l\x00"), now)
	c, _ = tb.Get(far + 2)
	if c.ExecPath != "/bin/ls" || c.Cmdline != "ls -l" || c.Parent.ExecPath != "/bin/sh" || c.Parent.Cmdline != "sh -c x" {
		t.Fatalf("after exec %+v", c)
	}
	tb.apply(&proctrace.Record{Kind: proctrace.Exit, PID: far + 2, Start: 19}, now)
	if c, _ = tb.Get(far + 2); c.Exited {
		t.Fatal("an exit of an older process of the same pid marked the record")
	}
	tb.apply(&proctrace.Record{Kind: proctrace.Exit, PID: far + 2, Start: 20}, now)
	if c, ok = tb.Get(far + 2); !ok || !c.Exited || c.Cmdline != "ls -l" {
		t.Fatalf("after exit %+v %v", c, ok)
	}
	if tb.applied.Load() != 5 {
		t.Fatalf("%d records applied, want 5", tb.applied.Load())
	}
}

// TestTableRetention: an exited process is kept for the retention, and
// forgotten after it, at the next record.
func TestTableRetention(t *testing.T) {
	tb := bareTable(16, 30*time.Second)
	t0 := time.Unix(1000, 0)
	tb.apply(execRec(far+1, far, 10, "/bin/sh", "sh\x00"), t0)
	tb.apply(&proctrace.Record{Kind: proctrace.Exit, PID: far + 1, Start: 10}, t0)
	tb.apply(execRec(far+2, far, 11, "/bin/sh", "sh\x00"), t0.Add(29*time.Second))
	if _, ok := tb.Get(far + 1); !ok {
		t.Fatal("an exited process forgotten before its retention")
	}
	tb.apply(execRec(far+3, far, 12, "/bin/sh", "sh\x00"), t0.Add(31*time.Second))
	if _, ok := tb.Get(far + 1); ok {
		t.Fatal("an exited process kept past its retention")
	}
	if s := tb.statsBare(); s.Records != 2 || s.Evictions != 0 {
		t.Fatalf("%+v, want 2 records and no eviction (expiry is not eviction)", s)
	}
}

// TestTableIsBounded: a full table drops the oldest exited process
// first, then any; each drop is counted, and the bound holds.
func TestTableIsBounded(t *testing.T) {
	tb := bareTable(3, time.Hour)
	now := time.Unix(1000, 0)
	for i := int32(1); i <= 3; i++ {
		tb.apply(execRec(far+i, far, uint64(i), "/bin/sh", "sh\x00"), now)
	}
	tb.apply(&proctrace.Record{Kind: proctrace.Exit, PID: far + 2, Start: 2}, now)
	tb.apply(execRec(far+4, far, 4, "/bin/sh", "sh\x00"), now)
	if _, ok := tb.Get(far + 2); ok {
		t.Fatal("the exited process was kept and a live one dropped")
	}
	for _, pid := range []int32{far + 1, far + 3, far + 4} {
		if _, ok := tb.Get(pid); !ok {
			t.Fatalf("live pid %d dropped while an exited one could go", pid)
		}
	}
	tb.apply(execRec(far+5, far, 5, "/bin/sh", "sh\x00"), now)
	if s := tb.statsBare(); s.Records != 3 || s.Evictions != 2 {
		t.Fatalf("%+v, want 3 records (the bound) and 2 evictions", s)
	}
}

// statsBare is Stats without the kernel's counts.
func (t *Table) statsBare() TableStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return TableStats{Records: len(t.m), Size: t.max, Evictions: t.evictions.Load()}
}

// TestResolveExe: the executable of a process gone before its
// /proc/PID/exe could be read is the path it exec'd, resolved in its
// root with symlinks followed, only if that still names the file that
// was exec'd.
func TestResolveExe(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(sh)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		t.Fatal(err)
	}
	root, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	tb := bareTable(16, time.Minute)
	rec := execRec(far+1, far, 10, sh, "sh\x00")
	rec.Dev, rec.Ino = st.Dev, st.Ino
	tb.apply(rec, time.Unix(1000, 0))
	p, _ := tb.Get(far + 1)
	if p.Exe != "" {
		t.Fatalf("a process that does not exist has an exe: %q", p.Exe)
	}
	if got := tb.ResolveExe(&p, root); got != real {
		t.Fatalf("resolved %q, want %q", got, real)
	}
	if p, _ = tb.Get(far + 1); p.Exe != real {
		t.Fatalf("the resolved exe was not kept: %q", p.Exe)
	}
	other := execRec(far+2, far, 11, sh, "sh\x00")
	other.Dev, other.Ino = st.Dev, st.Ino+1
	tb.apply(other, time.Unix(1000, 0))
	p, _ = tb.Get(far + 2)
	if got := tb.ResolveExe(&p, root); got != "" {
		t.Fatalf("a path that names another file now resolved to %q", got)
	}
}
