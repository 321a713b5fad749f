package procinfo

import (
	"log/slog"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/execgen"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
	"github.com/fsmon/fsmon_exporter/testutil/stepper"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// testExeCache is a cache of its own with room for max entries, closed
// when the test ends.
func testExeCache(t *testing.T, max int) *ExeCache {
	t.Helper()
	testroot.Require(t)
	c := NewExeCache(slog.New(slog.DiscardHandler), CacheOn, proc.FS{Root: "/proc"}, max)
	if !c.On() {
		g, err := execgen.Open()
		if err != nil {
			testroot.Unavailable(t, "the exec counter cannot be loaded here, so the executable cache is off: %v", err)
		} else {
			g.Close()
			t.Fatal("the exec counter loads, yet the executable cache is off")
		}
	}
	t.Cleanup(c.Close)
	return c
}

// TestExitMakesEntryStale: an entry for a process that has exited is
// never used again, so its pid, reused, starts afresh.
func TestExitMakesEntryStale(t *testing.T) {
	c := testExeCache(t, 16)
	s := stepper.Shell(t, "echo ready; read x")
	s.Expect(t, "ready") // the shell runs: its exec is counted
	pid := s.PID()
	c.Begin()
	defer c.End(true)
	if c.Fill(pid) == nil || c.Lookup(pid) == nil {
		t.Fatal("a live process was not cached")
	}
	s.Cmd.Process.Kill()
	s.Cmd.Wait() // reaped, so its exit (counted inside do_exit) is behind us
	if c.Lookup(pid) != nil {
		t.Fatal("the entry of an exited process was used")
	}
}

// TestExitingProcessIsNotCached: a process that has begun to exit is
// not cached, because its exit is counted before its executable is gone
// (Linux 6.16 moved the exit tracepoint before exit_mm): an entry filled
// in between would keep the final count and pass for whatever process
// gets the pid next. User space cannot hold a process in that window, so
// the test exits it between the stat of its executable and the check
// (the hook afterStat), and keeps it a zombie, PF_EXITING set, its pid
// not reused.
func TestExitingProcessIsNotCached(t *testing.T) {
	c := testExeCache(t, 16)
	s := stepper.Shell(t, "echo ready; read x")
	s.Expect(t, "ready")
	pid := s.PID()
	exited := false
	c.afterStat = func(int32) {
		s.Cmd.Process.Kill()
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_PID, int(pid), &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
			t.Fatalf("waitid: %v", err)
		}
		exited = true
	}
	c.Begin()
	defer c.End(true)
	en := c.Fill(pid)
	if !exited {
		t.Fatal("fill did not reach the hook: the executable of a live process could not be read")
	}
	if en != nil || c.m[pid] != nil {
		t.Fatal("a process that had begun to exit was cached")
	}
	s.Cmd.Wait()
}

// TestExeCacheIsBounded: past its bound the cache drops the entries of
// processes gone (keeping the live ones), then, if that is not enough,
// everything; each entry holds an fd.
func TestExeCacheIsBounded(t *testing.T) {
	c := testExeCache(t, 8)
	var kids []*stepper.Stepper
	for i := 0; i < 12; i++ {
		k := stepper.Shell(t, "echo ready; read x")
		k.Expect(t, "ready") // running: its exec is counted
		kids = append(kids, k)
	}
	pid := func(i int) int32 { return kids[i].PID() }
	c.Begin()
	defer c.End(true)
	for i := 0; i < 8; i++ {
		if c.Fill(pid(i)) == nil {
			t.Fatalf("pid %d not cached", pid(i))
		}
	}
	// Four gone: the next fill drops them and keeps the four alive.
	for i := 0; i < 4; i++ {
		kids[i].Cmd.Process.Kill()
		kids[i].Cmd.Wait()
	}
	c.Fill(pid(8))
	if len(c.m) != 5 {
		t.Fatalf("%d entries after an eviction of 4 gone, want 5", len(c.m))
	}
	for i := 4; i <= 8; i++ {
		if c.Lookup(pid(i)) == nil {
			t.Fatalf("the live pid %d lost its entry", pid(i))
		}
	}
	// Full of live ones: everything goes, the bound holds.
	for i := 9; i < 12; i++ {
		c.Fill(pid(i))
	}
	if len(c.m) > 8 {
		t.Fatalf("%d entries past the bound of 8", len(c.m))
	}
}

// TestExecAfterStatMakesEntryStale: an exec between the stat of the
// executable and the entry's first use makes the entry stale, because
// the count was taken before the stat.
func TestExecAfterStatMakesEntryStale(t *testing.T) {
	c := testExeCache(t, 16)
	s := stepper.Shell(t, "echo ready; read x; exec cat")
	s.Expect(t, "ready")
	pid := s.PID()
	c.afterStat = func(int32) {
		// The shell reads its line byte by byte and execs cat, which
		// echoes the next line: cat runs, its exec is counted.
		s.Send(t, "go")
		s.Send(t, "cat-up")
		s.Expect(t, "cat-up")
	}
	c.Begin()
	defer c.End(true)
	if c.Fill(pid) == nil {
		t.Fatal("the shell was not cached")
	}
	if c.Lookup(pid) != nil {
		t.Fatal("an entry read before an exec was used after it")
	}
}
