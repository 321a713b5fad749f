// Package fold folds bursts of identical events into one event with a
// count, so that a process hammering a protected file produces one record
// per window rather than thousands. Metrics are counted before folding
// (by the engine), so folding changes only what the log sinks see.
package fold

import (
	"sync"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// DefaultMaxOpen caps the number of folds held open at once when the
// caller does not choose: enough for every distinct (process, file) pair
// of a busy node within a second, small enough (a few MiB) to never
// matter.
const DefaultMaxOpen = 4096

// key is what makes two events identical. The whole Process and Container
// take part, not only the pid and executable path: a pid reused by another
// program, or an exec that changed the command line, is another process
// and must never be merged with the first.
type key struct {
	kind      fsmon.Kind
	op        fsmon.Op
	mode      fsmon.Mode
	profile   string
	filter    string
	path      string
	process   fsmon.Process
	container fsmon.Container
	answer    fsmon.Answer
	reason    fsmon.Reason
}

func keyOf(ev *fsmon.Event) key {
	return key{
		kind:      ev.Kind,
		op:        ev.Op,
		mode:      ev.Mode,
		profile:   ev.Profile,
		filter:    ev.Filter,
		path:      ev.Path,
		process:   ev.Process,
		container: ev.Container,
		answer:    ev.Answer,
		reason:    ev.Reason,
	}
}

// fold is one open window: the first event, whose Time and Decision the
// folded event keeps, with Count adding up everything that joined it.
type fold struct {
	ev       fsmon.Event
	deadline time.Time
	k        key
}

// Folder is a fsmon.Sink that folds identical events seen within a window
// into one and hands the result to the next sink when the window closes.
//
// Events reach the next sink from two goroutines, the caller's (Handle,
// when the cap forces an early emit) and the Folder's own timer, but never
// concurrently: every call to next.Handle is made under the Folder's lock.
type Folder struct {
	next    fsmon.Sink
	window  time.Duration
	maxOpen int
	now     func() time.Time

	mu     sync.Mutex
	open   map[key]*fold
	order  []*fold // FIFO by deadline; head at order[head]
	head   int
	closed bool

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// Options tunes a Folder beyond New's defaults.
type Options struct {
	// MaxOpen caps the folds held open at once (DefaultMaxOpen when 0).
	// Past it, the oldest fold is emitted early to make room.
	MaxOpen int
}

// New returns a Folder in front of next. A window of zero or less turns
// folding off: every event passes straight through.
func New(next fsmon.Sink, window time.Duration) *Folder {
	return NewWithOptions(next, window, Options{})
}

// NewWithOptions is New with a cap on open folds.
func NewWithOptions(next fsmon.Sink, window time.Duration, opts Options) *Folder {
	f := newFolder(next, window, opts, time.Now)
	if f.window > 0 {
		go f.run()
	} else {
		close(f.done)
	}
	return f
}

// newFolder builds a Folder without its timer goroutine: tests drive it
// with a fake clock and call expire themselves.
func newFolder(next fsmon.Sink, window time.Duration, opts Options, now func() time.Time) *Folder {
	if opts.MaxOpen <= 0 {
		opts.MaxOpen = DefaultMaxOpen
	}
	return &Folder{
		next:    next,
		window:  window,
		maxOpen: opts.MaxOpen,
		now:     now,
		open:    make(map[key]*fold),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
}

// Handle folds ev into an open window or opens one. It never blocks for
// longer than the next sink's Handle takes.
func (f *Folder) Handle(ev *fsmon.Event) {
	if f.window <= 0 {
		f.next.Handle(ev)
		return
	}
	n := ev.Count
	if n <= 0 {
		n = 1
	}
	k := keyOf(ev)

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		// After Close nothing would ever emit a fold: pass through, so
		// that events reported during shutdown are not lost.
		f.next.Handle(ev)
		return
	}
	now := f.now()
	// Emit what has expired first, so that the order of first
	// occurrences is kept even when the timer goroutine is late.
	f.expireLocked(now)
	if fo, ok := f.open[k]; ok {
		fo.ev.Count += n
		if ev.File != nil {
			// A burst of writes: what the file was before the first,
			// what it is after the last.
			fo.ev.File = ev.File
		}
		return
	}
	if len(f.open) >= f.maxOpen {
		f.emitHeadLocked()
	}
	fo := &fold{ev: *ev, deadline: now.Add(f.window), k: k}
	fo.ev.Count = n
	f.open[k] = fo
	f.order = append(f.order, fo)
	if len(f.open) == 1 {
		// The timer goroutine sleeps while nothing is open.
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
}

// Flush emits every open fold now, oldest first.
func (f *Folder) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.open) > 0 {
		f.emitHeadLocked()
	}
}

// Close stops the timer and flushes. Events handled after Close pass
// straight through to the next sink.
func (f *Folder) Close() {
	f.mu.Lock()
	already := f.closed
	f.closed = true
	f.mu.Unlock()
	if !already && f.window > 0 {
		close(f.stop)
	}
	<-f.done
	f.Flush()
}

// Open tells how many folds are open, for tests and a gauge.
func (f *Folder) Open() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.open)
}

// expire emits every fold whose window has closed at the clock's now.
func (f *Folder) expire() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.expireLocked(f.now())
}

func (f *Folder) expireLocked(now time.Time) {
	for len(f.open) > 0 && !f.order[f.head].deadline.After(now) {
		f.emitHeadLocked()
	}
}

// emitHeadLocked emits the oldest open fold. Every fold has the same
// window and opens at the clock's now, so the oldest is also the first to
// expire: a FIFO is all the ordering needed.
func (f *Folder) emitHeadLocked() {
	fo := f.order[f.head]
	f.order[f.head] = nil
	f.head++
	// Compact the FIFO once its dead prefix is the larger half, so that
	// memory stays bounded by the cap and not by the events seen.
	if f.head > len(f.order)/2 {
		n := copy(f.order, f.order[f.head:])
		clear(f.order[n:])
		f.order = f.order[:n]
		f.head = 0
	}
	delete(f.open, fo.k)
	f.next.Handle(&fo.ev)
}

// nextDeadline is when the oldest fold closes, or false when none is open.
func (f *Folder) nextDeadline() (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.open) == 0 {
		return time.Time{}, false
	}
	return f.order[f.head].deadline, true
}

// run sleeps until the oldest fold's deadline, emits what expired and
// sleeps again; with nothing open it waits for Handle to wake it.
func (f *Folder) run() {
	defer close(f.done)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		if d, ok := f.nextDeadline(); ok {
			t.Reset(time.Until(d))
			select {
			case <-t.C:
				f.expire()
			case <-f.wake:
				t.Stop()
			case <-f.stop:
				t.Stop()
				return
			}
			continue
		}
		select {
		case <-f.wake:
		case <-f.stop:
			return
		}
	}
}
