package fold

import (
	"sync"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// recorder is a sink that keeps what it is handed.
type recorder struct {
	mu  sync.Mutex
	evs []fsmon.Event
}

func (r *recorder) Handle(ev *fsmon.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.evs = append(r.evs, *ev)
}

func (r *recorder) got() []fsmon.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]fsmon.Event(nil), r.evs...)
}

// fakeClock is moved by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func event(pid int32, path string) *fsmon.Event {
	return &fsmon.Event{
		Time: t0, Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Mode: fsmon.ModeProtect,
		Profile: "host", Filter: "shadow", Path: path, Count: 1,
		Process: fsmon.Process{PID: pid, ExecutablePath: "/usr/bin/cat", ExecutableName: "cat", UserID: 1000},
	}
}

func setup(window time.Duration, maxOpen int) (*Folder, *recorder, *fakeClock) {
	rec := &recorder{}
	clk := &fakeClock{t: t0}
	f := newFolder(rec, window, Options{MaxOpen: maxOpen}, clk.now)
	close(f.done) // no timer goroutine: the test moves the clock
	return f, rec, clk
}

func TestIdenticalEventsFoldIntoOne(t *testing.T) {
	f, rec, clk := setup(time.Second, 0)
	for range 5 {
		f.Handle(event(10, "/etc/shadow"))
		clk.advance(100 * time.Millisecond)
	}
	if n := len(rec.got()); n != 0 {
		t.Fatalf("emitted %d events before the window closed", n)
	}
	clk.advance(500 * time.Millisecond) // 1.0 s after the first
	f.expire()
	got := rec.got()
	if len(got) != 1 || got[0].Count != 5 {
		t.Fatalf("got %+v, want one event with count 5", got)
	}
	if !got[0].Time.Equal(t0) {
		t.Errorf("folded event has time %v, want the first event's %v", got[0].Time, t0)
	}
}

func TestDifferentProcessesNeverMerge(t *testing.T) {
	f, rec, _ := setup(time.Second, 0)
	f.Handle(event(10, "/etc/shadow"))
	f.Handle(event(11, "/etc/shadow"))
	other := event(10, "/etc/shadow")
	other.Process.ExecutablePath = "/usr/bin/less"
	f.Handle(other)
	reexec := event(10, "/etc/shadow")
	reexec.Process.CommandLine = "cat /etc/shadow"
	f.Handle(reexec)
	inContainer := event(10, "/etc/shadow")
	inContainer.Container.ID = "abc"
	f.Handle(inContainer)
	f.Handle(event(10, "/etc/gshadow"))
	f.Flush()
	got := rec.got()
	if len(got) != 6 {
		t.Fatalf("got %d events, want 6 distinct ones: %+v", len(got), got)
	}
	for _, ev := range got {
		if ev.Count != 1 {
			t.Errorf("event %+v merged with another", ev)
		}
	}
	// First-occurrence order is kept.
	if got[0].Process.PID != 10 || got[1].Process.PID != 11 || got[5].Path != "/etc/gshadow" {
		t.Errorf("order not kept: %+v", got)
	}
}

func TestSingleEventWaitsNoLongerThanWindow(t *testing.T) {
	f, rec, clk := setup(time.Second, 0)
	f.Handle(event(10, "/etc/shadow"))
	clk.advance(999 * time.Millisecond)
	f.expire()
	if len(rec.got()) != 0 {
		t.Fatal("emitted before the window closed")
	}
	clk.advance(time.Millisecond)
	f.expire()
	if len(rec.got()) != 1 {
		t.Fatal("not emitted when the window closed")
	}
}

func TestLaterEventsOpenANewWindow(t *testing.T) {
	f, rec, clk := setup(time.Second, 0)
	f.Handle(event(10, "/etc/shadow"))
	clk.advance(time.Second)
	// No expire call: Handle itself emits what expired before folding.
	f.Handle(event(10, "/etc/shadow"))
	f.Handle(event(10, "/etc/shadow"))
	f.Flush()
	got := rec.got()
	if len(got) != 2 || got[0].Count != 1 || got[1].Count != 2 {
		t.Fatalf("got %+v, want counts 1 then 2", got)
	}
}

func TestCountsAlreadyFoldedEvents(t *testing.T) {
	f, rec, _ := setup(time.Second, 0)
	ev := event(10, "/etc/shadow")
	ev.Count = 3
	f.Handle(ev)
	zero := event(10, "/etc/shadow")
	zero.Count = 0 // unset counts as one
	f.Handle(zero)
	f.Flush()
	if got := rec.got(); len(got) != 1 || got[0].Count != 4 {
		t.Fatalf("got %+v, want count 4", got)
	}
}

func TestCapEmitsOldestEarly(t *testing.T) {
	f, rec, _ := setup(time.Second, 3)
	for pid := int32(1); pid <= 10; pid++ {
		f.Handle(event(pid, "/etc/shadow"))
		if f.Open() > 3 {
			t.Fatalf("%d folds open, cap is 3", f.Open())
		}
	}
	got := rec.got()
	if len(got) != 7 {
		t.Fatalf("emitted %d early, want 7", len(got))
	}
	for i, ev := range got {
		if ev.Process.PID != int32(i+1) {
			t.Errorf("early emit %d is pid %d, want the oldest, %d", i, ev.Process.PID, i+1)
		}
	}
	f.Flush()
	if n := len(rec.got()); n != 10 {
		t.Fatalf("after flush %d events, want 10", n)
	}
	if len(f.order) > 7 {
		t.Errorf("FIFO holds %d slots for %d open folds", len(f.order), f.Open())
	}
}

func TestCloseFlushesAndPassesThrough(t *testing.T) {
	rec := &recorder{}
	f := New(rec, time.Hour)
	f.Handle(event(10, "/etc/shadow"))
	f.Handle(event(10, "/etc/shadow"))
	f.Close()
	if got := rec.got(); len(got) != 1 || got[0].Count != 2 {
		t.Fatalf("after Close got %+v, want one event with count 2", got)
	}
	f.Handle(event(10, "/etc/shadow"))
	if n := len(rec.got()); n != 2 {
		t.Fatalf("event after Close not passed through: %d events", n)
	}
	f.Close() // twice is fine
}

func TestZeroWindowPassesThrough(t *testing.T) {
	rec := &recorder{}
	f := New(rec, 0)
	f.Handle(event(10, "/etc/shadow"))
	f.Handle(event(10, "/etc/shadow"))
	if n := len(rec.got()); n != 2 {
		t.Fatalf("got %d events, want 2", n)
	}
	f.Close()
}

// TestTimerEmits checks the real timer goroutine, with generous bounds:
// the fake-clock tests above pin the exact behaviour.
func TestTimerEmits(t *testing.T) {
	rec := &recorder{}
	f := New(rec, 50*time.Millisecond)
	defer f.Close()
	start := time.Now()
	f.Handle(event(10, "/etc/shadow"))
	f.Handle(event(10, "/etc/shadow"))
	deadline := time.Now().Add(5 * time.Second)
	for len(rec.got()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("fold never emitted by the timer")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Errorf("emitted after %v, before the window closed", el)
	}
	if got := rec.got(); got[0].Count != 2 {
		t.Errorf("count %d, want 2", got[0].Count)
	}
	// A second burst after the goroutine went idle wakes it again.
	f.Handle(event(11, "/etc/shadow"))
	deadline = time.Now().Add(5 * time.Second)
	for len(rec.got()) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("second fold never emitted")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Default answers of the same open for different reasons (a stuck
// decision, a panic) are different events.
func TestTimeoutsOfDifferentReasonsNeverMerge(t *testing.T) {
	f, rec, _ := setup(time.Second, 0)
	timeout := func(why fsmon.Reason) *fsmon.Event {
		return &fsmon.Event{Time: t0, Kind: fsmon.KindTimeout, Op: fsmon.OpOpen, Path: "/etc/shadow", Count: 1,
			Process: fsmon.Process{PID: 10, UserID: -1}, Answer: fsmon.AnswerAllow, Reason: why}
	}
	f.Handle(timeout(fsmon.ReasonDeadline))
	f.Handle(timeout(fsmon.ReasonPanic))
	f.Handle(timeout(fsmon.ReasonDeadline))
	f.Flush()
	got := rec.got()
	if len(got) != 2 || got[0].Count != 2 || got[1].Reason != fsmon.ReasonPanic {
		t.Fatalf("got %+v, want the deadlines folded (count 2) and the panic apart", got)
	}
}

// A burst of writes folded into one event says what the file was before
// the first and what it is after the last.
func TestFoldKeepsTheLastFacts(t *testing.T) {
	f, rec, clk := setup(time.Second, 0)
	for i := range 3 {
		ev := event(10, "/etc/hosts")
		ev.Kind, ev.Op = fsmon.KindChange, fsmon.OpWrite
		ev.Previous = &fsmon.FileFacts{Size: int64(i)}
		ev.File = &fsmon.FileFacts{Size: int64(i + 1)}
		f.Handle(ev)
	}
	clk.advance(time.Second)
	f.expire()
	got := rec.got()
	if len(got) != 1 || got[0].Count != 3 || got[0].Previous.Size != 0 || got[0].File.Size != 3 {
		t.Fatalf("got %+v, want one event, count 3, sizes 0 before and 3 after", got)
	}
}
