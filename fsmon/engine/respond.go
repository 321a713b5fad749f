package engine

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
)

const (
	permBufSize = 64 << 10
	// a permission event without info records is 24 bytes.
	maxPermSlots = permBufSize / 24
)

// Slot states, in the low two bits of permSlot.state; the rest is the
// batch generation, so that a late watchdog can never claim the slot of a
// later batch.
const (
	slotPending  = 0
	slotLoop     = 1 // answered by the loop
	slotWatchdog = 2 // being answered by the watchdog
	slotDefault  = 3 // answered by the watchdog with the default
)

type permSlot struct {
	fd    int32
	pid   int32
	mask  fanotify.Mask
	state atomic.Uint64
}

// permBatch is the batch the loop is working on, shared with the
// watchdog.
type permBatch struct {
	gen   atomic.Uint64
	start atomic.Int64 // unix nanoseconds the current decision began; 0 when idle
	n     atomic.Int32
	slots [maxPermSlots]permSlot
}

func (e *Engine) permLoop() error {
	buf := make([]byte, permBufSize)
	batch := e.batch
	var d decision
	// Locked for good: a thread whose priority was raised must not go
	// back to run other goroutines; it ends with this one.
	runtime.LockOSThread()
	got, err := raisePriority(e.opts.Priority, rtPriority)
	if err != nil {
		e.log.Warn("the permission loop runs at "+got+": under a flood of openers decisions may wait for the CPU", "err", err)
	} else {
		e.log.Info("permission loop priority", "scheduling", got)
	}
	handle := func(b []byte) {
		readAt := time.Now()
		gen := batch.gen.Add(1)
		cnt := 0
		perr := fanotify.Parse(b, func(ev *fanotify.Event) {
			if ev.Mask.Any(fanotify.QOverflow) {
				e.overflowFan.Add(1)
				e.dropKernel.Add(1)
				return
			}
			if ev.FD < 0 || cnt >= maxPermSlots {
				return
			}
			s := &batch.slots[cnt]
			s.fd, s.pid, s.mask = ev.FD, ev.PID, ev.Mask
			s.state.Store(gen << 2)
			cnt++
		})
		batch.n.Store(int32(cnt))
		d.cached = e.exes.Begin()
		for i := 0; i < cnt; i++ {
			// The deadline is the decision's own, from when the loop
			// starts it, not the batch's age: under a flood of openers
			// every answer wakes every waiting opener, so the last
			// events of a batch wait for CPU (hundreds of ms even for a
			// minimal responder) without anything being stuck. Timed
			// by the batch, they would all get the default answer.
			batch.start.Store(time.Now().UnixNano())
			e.handlePerm(&batch.slots[i], gen, readAt, &d)
		}
		e.exes.End(d.cached)
		d.cached = false
		batch.start.Store(0)
		if perr != nil {
			e.log.Warn("malformed permission event batch", "err", perr)
		}
	}
	for {
		n, err := e.perm.Read(buf)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) && e.stopping.Load() {
				return nil // drained
			}
			if errors.Is(err, unix.EAGAIN) {
				continue
			}
			if transient(err) {
				// The kernel could not give the event an fd (out of fds
				// or memory); it answers that event itself. Reading goes
				// on: an exit here would fail everything open.
				e.readErrors.Add(1)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("reading permission events: %w", err)
		}
		handle(buf[:n])
	}
}

// answer writes the verdict unless the watchdog already answered; it
// reports whether the loop's verdict is the one the kernel got.
func (e *Engine) answer(s *permSlot, gen uint64, v fanotify.Verdict) bool {
	if s.state.CompareAndSwap(gen<<2|slotPending, gen<<2|slotLoop) {
		if err := e.perm.Respond(s.fd, v); err != nil {
			e.log.Error("answering permission event", "err", err)
		}
		return true
	}
	// Answered already by the loop (a second call, from the recovery of a
	// panic): nothing to do. Claimed by the watchdog: wait for its write
	// before the fd may be closed, so the number cannot be reused under
	// its answer.
	for {
		switch s.state.Load() {
		case gen<<2 | slotLoop, gen<<2 | slotDefault:
			return false
		}
		runtime.Gosched()
	}
}

func (e *Engine) handlePerm(s *permSlot, gen uint64, readAt time.Time, d *decision) {
	e.permEvents.Add(1)
	defer fanotify.CloseFD(s.fd)
	defer func() {
		// A bug must not take the daemon down (and the protection with
		// it): the event gets the default answer, the loop goes on.
		if r := recover(); r != nil {
			v := fanotify.Allow
			if e.opts.Default == FailClosed {
				v = fanotify.Deny
			}
			e.answer(s, gen, v)
			e.log.Error("permission decision failed; default answer written", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	if s.pid == e.selfPID {
		// Our own opens are answered at once, never decided.
		e.answer(s, gen, fanotify.Allow)
		return
	}
	e.decide(s, d)
	if d.viaDir != nil {
		// Covered by its name only: a file new in a marked directory.
		// It gets marks of its own before the answer, so that its
		// creator writes only to a marked inode and a link made
		// elsewhere meets the mark (docs/design/deny.md §2).
		e.adopt(s.fd, d)
	}
	ours := e.answer(s, gen, d.verdict())
	took := time.Since(readAt)
	e.decisions.Observe(took)
	if !ours || d.kind == 0 {
		return
	}
	// An exec makes two permission events, FAN_OPEN_EXEC_PERM and then
	// FAN_OPEN_PERM of the same file by the same process: one report.
	key := execKey{s.pid, d.id}
	if s.mask.Any(fanotify.OpenExecPerm) {
		e.lastExec = key
	} else if e.lastExec == key {
		e.lastExec = execKey{}
		return
	} else {
		e.lastExec = execKey{}
	}
	op := fsmon.OpOpen
	if s.mask.Any(fanotify.OpenExecPerm) {
		op = fsmon.OpExec
	}
	ev := fsmon.Event{
		Time:      readAt,
		Kind:      d.kind,
		Op:        op,
		Mode:      d.rule.Mode,
		Profile:   d.rule.Profile.Name,
		Filter:    d.rule.Name,
		Path:      d.path,
		Process:   d.proc,
		Container: d.group.Container(),
		Count:     1,
		Decision:  took,
	}
	e.enqueue(&ev)
}

// execKey names the file a process exec'd, to fold the exec's two
// permission events into one report.
type execKey struct {
	pid int32
	id  devIno
}

// watchdog answers what is pending of the loop's batch with the default
// once the decision the loop is in is older than the deadline: the loop
// is stuck (a /proc read that does not return), and what waits behind
// that decision must not wait for it.
func (e *Engine) watchdog(done <-chan struct{}) {
	// Above the loop, so that a loop that spins cannot starve it; locked
	// for good, as the loop's thread is.
	runtime.LockOSThread()
	if _, err := raisePriority(e.opts.Priority, rtPriority+1); err != nil {
		e.log.Debug("watchdog priority", "err", err)
	}
	tick := e.opts.DecisionTimeout / 4
	if tick < time.Millisecond {
		tick = time.Millisecond
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	v := fanotify.Allow
	if e.opts.Default == FailClosed {
		v = fanotify.Deny
	}
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		b := e.batch
		// Seqlock: start is only trusted as the start of a decision of
		// batch gen when gen is the same before and after it is read. The loop zeroes
		// start before it moves to the next generation, and a slot of a
		// later batch never matches gen in the CAS below.
		gen := b.gen.Load()
		start := b.start.Load()
		if gen != b.gen.Load() || start == 0 || time.Since(time.Unix(0, start)) < e.opts.DecisionTimeout {
			continue
		}
		n := int(b.n.Load())
		late := 0
		for i := 0; i < n; i++ {
			s := &b.slots[i]
			if s.state.CompareAndSwap(gen<<2|slotPending, gen<<2|slotWatchdog) {
				if err := e.perm.Respond(s.fd, v); err != nil {
					e.log.Error("answering late permission event", "err", err)
				}
				s.state.Store(gen<<2 | slotDefault)
				late++
			}
		}
		if late > 0 {
			e.timeouts.Add(uint64(late))
			e.log.Warn("permission decisions missed their deadline; default answer written",
				"count", late, "deadline", e.opts.DecisionTimeout, "answer", v.String())
		}
		// The loop is stuck in a decision: what the kernel queues behind
		// it must not wait for it. A second reader answers with the
		// default until the loop moves on.
		if e.rescuing.CompareAndSwap(false, true) {
			e.rescued = make(chan struct{})
			go e.rescue(gen, v, e.rescued)
		}
	}
}

// rescue reads and answers permission events with the default while the
// loop is stuck in batch gen. It makes no decision (whatever held the
// loop up could hold it up too): read, answer, close.
func (e *Engine) rescue(gen uint64, v fanotify.Verdict, done chan struct{}) {
	runtime.LockOSThread() // for good, as the loop's
	raisePriority(e.opts.Priority, rtPriority)
	defer close(done)
	defer e.rescuing.Store(false)
	buf := make([]byte, 4096)
	b := e.batch
	for b.gen.Load() == gen && b.start.Load() != 0 && !e.stopping.Load() {
		n, err := e.perm.Read(buf)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || !transient(err) {
				return
			}
			continue
		}
		answered := 0
		fanotify.Parse(buf[:n], func(ev *fanotify.Event) {
			if ev.FD < 0 {
				return
			}
			a := v
			if ev.PID == e.selfPID {
				a = fanotify.Allow
			}
			e.perm.Respond(ev.FD, a)
			fanotify.CloseFD(ev.FD)
			answered++
		})
		e.permEvents.Add(uint64(answered))
		e.timeouts.Add(uint64(answered))
	}
}

// waker ends the permission loop's blocking read(2): a memfd of the
// daemon's own, marked in the permission group, whose opening makes an
// event the loop wakes for (and, being the daemon's own, allows at once).
// Nothing else wakes a thread blocked in read(2) on a fanotify fd: a
// closed fd does not, and Go restarts syscalls that signals interrupt.
type waker struct {
	fd   int
	path string
}

func newWaker(g *fanotify.Group) (*waker, error) {
	fd, err := unix.MemfdCreate("fsmon-wake", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	if err := g.Add(fd, fanotify.OpenPerm); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("marking the wake file: %w", err)
	}
	return &waker{fd: fd, path: "/proc/self/fd/" + strconv.Itoa(fd)}, nil
}

func (w *waker) wake() {
	if fd, err := unix.Open(w.path, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(fd)
	}
}

func (w *waker) close() { unix.Close(w.fd) }
