package engine

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// allowedOpener starts an engine protecting dir/secret with
// /usr/bin/sleep allowed, and a sleep that stands in for the opener.
func allowedOpener(tb testing.TB, dir string) (h *harness, secret string, pid int32) {
	tb.Helper()
	secret = filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("s"), 0o644); err != nil {
		tb.Fatal(err)
	}
	// Without the process table: its reader allocates for every exec on
	// the machine, and AllocsPerRun counts every goroutine's allocations;
	// an allowed decision never reads the table.
	h = start(tb, blockFile("protect", secret, "/usr/bin/sleep"), func(o *Options) { o.ProcessTable = ProcessTableOff })
	// The scan for descriptors opened before protection that Apply
	// asked for allocates on a goroutine of its own, which
	// testing.AllocsPerRun would count: wait for it to be done.
	for deadline := time.Now().Add(10 * time.Second); h.earlyScans() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatal("the scan after Apply did not finish within 10s")
		}
	}
	opener := exec.Command("sleep", "60")
	if err := opener.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { opener.Process.Kill(); opener.Wait() })
	return h, secret, int32(opener.Process.Pid)
}

// leastAllocs is the fewest allocations per call of f over a few runs
// of testing.AllocsPerRun, which counts the whole process's: the engine's
// other goroutines (the notification loop with the events of the test's
// own writes, on a loaded machine later than the writes) must not count
// as the decision's, while an allocation the decision makes shows in
// every run.
func leastAllocs(f func()) float64 {
	least := testing.AllocsPerRun(200, f)
	for i := 0; i < 4 && least > 0; i++ {
		least = min(least, testing.AllocsPerRun(200, f))
	}
	return least
}

// TestDecisionAllocatesNothing holds the permission path to its
// promise: deciding for an allowed process, and for a file no rule
// covers, allocates nothing.
func TestDecisionAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts under the race detector count its own")
	}
	dir := t.TempDir()
	h, secret, pid := allowedOpener(t, dir)
	other := filepath.Join(dir, "other")
	writeFile(t, other, "o")
	for _, tc := range []struct {
		name, path string
	}{{"allowed process", secret}, {"uncovered sibling", other}} {
		f, err := os.Open(tc.path) // our own open: answered at once
		if err != nil {
			t.Fatal(err)
		}
		s := &permSlot{fd: int32(f.Fd()), pid: pid, mask: fanotify.OpenPerm}
		var d decision
		h.decide(s, &d)
		if d.verdict() != fanotify.Allow || d.kind != 0 {
			t.Fatalf("%s: verdict %v kind %v", tc.name, d.verdict(), d.kind)
		}
		if n := leastAllocs(func() { h.decide(s, &d) }); n != 0 {
			t.Errorf("%s: %v allocations per decision", tc.name, n)
		}
		// The same through the executable cache, as the loop decides:
		// the first decision fills it, the rest read it.
		if d.cached = h.exes.Begin(); d.cached {
			hits := h.exes.Hits()
			h.decide(s, &d)
			if n := leastAllocs(func() { h.decide(s, &d) }); n != 0 {
				t.Errorf("%s, cached: %v allocations per decision", tc.name, n)
			}
			if tc.path == secret && h.exes.Hits() == hits {
				t.Errorf("%s, cached: no decision came from the cache", tc.name)
			}
		}
		h.exes.End(d.cached)
		d.cached = false
		f.Close()
	}
	// And a process outside the list is denied by the same code.
	f, _ := os.Open(secret)
	defer f.Close()
	var d decision
	h.decide(&permSlot{fd: int32(f.Fd()), pid: int32(os.Getppid()), mask: fanotify.OpenPerm}, &d)
	if d.kind != fsmon.KindDenied {
		t.Fatalf("parent process not denied: %v", d.kind)
	}
	if !h.exes.On() {
		skipNoCounter(t) // after the uncached half, which ran
	}
}

// BenchmarkDecideAllowed is the decision for an allowed open of a
// protected file, without and with the executable cache: the part of
// scenario a of `make bench` that is the daemon's own code.
func BenchmarkDecideAllowed(b *testing.B) {
	h, secret, pid := allowedOpener(b, b.TempDir())
	f, err := os.Open(secret)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s := &permSlot{fd: int32(f.Fd()), pid: pid, mask: fanotify.OpenPerm}
	for _, cached := range []bool{false, true} {
		b.Run(fmt.Sprintf("cached=%v", cached), func(b *testing.B) {
			var d decision
			if cached {
				if d.cached = h.exes.Begin(); !d.cached {
					testroot.Unavailable(b, "the executable cache is off here (see the engine's log)")
				}
				defer h.exes.End(true)
			}
			for b.Loop() {
				h.decide(s, &d)
				if d.verdict() != fanotify.Allow || d.kind != 0 {
					b.Fatalf("verdict %v kind %v", d.verdict(), d.kind)
				}
			}
		})
	}
}
