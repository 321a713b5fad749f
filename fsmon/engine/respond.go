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
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
)

const (
	permBufSize = 64 << 10
	// a permission event without info records is 24 bytes.
	maxPermSlots = permBufSize / 24
)

// Slot states, in the low three bits of permSlot.state; the rest is the
// batch generation, so that a late watchdog can never claim the slot of a
// later batch.
//
// A decision has two phases. Phase 1 works out the verdict from memory
// and from reads that cannot block (the tables, fstat of the event fd,
// the executable cache or a stat of /proc/PID/exe, comm); the slot then
// stores it (slotDecidedAllow or slotDecidedDeny). Phase 2 gathers what
// a report needs and may block (the command line takes the process's
// mmap_lock; the user). A watchdog that finds a decided slot past the
// deadline writes the slot's own verdict (late, not a default answer);
// only a slot still in phase 1 (a hung read, a panic) gets the default.
//
// A slot whose decision has not begun when the watchdog fires is handed
// to another reader (e.handoff), which decides it; the fd is then that
// reader's.
const (
	slotPending      = 0 // not begun
	slotDecidedAllow = 1 // phase 1 said allow; not answered yet
	slotDecidedDeny  = 2 // phase 1 said deny; not answered yet
	slotLoop         = 3 // answered by its reader (the loop or a stand-in)
	slotWatchdog     = 4 // being answered or handed by the watchdog
	slotDefault      = 5 // answered by the watchdog with the default
	slotLate         = 6 // answered by the watchdog with the slot's verdict
	slotJudging      = 7 // in phase 1
	slotHanded       = 8 // handed to another reader

	slotBits = 4
	slotMask = 1<<slotBits - 1
)

// handed is an event the watchdog took from a stuck reader's batch
// before its decision began, for another reader to decide.
type handed struct {
	fd, pid int32
	mask    fanotify.Mask
	op      fsmon.Op
	readAt  int64
}

// claim starts the decision of slot s; false when the watchdog handed
// it to another reader, which owns its fd from then on.
func claim(s *permSlot, gen uint64) bool {
	base := gen << slotBits
	if s.state.CompareAndSwap(base|slotPending, base|slotJudging) {
		return true
	}
	for s.state.Load() != base|slotHanded {
		runtime.Gosched() // the watchdog is copying it
	}
	return false
}

// takeHandoffs decides, as batches of reader batch b, the events handed
// from stuck readers.
func (e *Engine) takeHandoffs(b *permBatch, run func(s *permSlot, gen uint64, readAt time.Time)) {
	for {
		gen := b.gen.Add(1)
		cnt := 0
		var readAt int64
	fill:
		for cnt < maxPermSlots {
			select {
			case h := <-e.handoff:
				s := &b.slots[cnt]
				s.fd, s.pid, s.mask, s.op = h.fd, h.pid, h.mask, h.op
				s.state.Store(gen << slotBits)
				if cnt == 0 {
					readAt = h.readAt
				}
				cnt++
			default:
				break fill
			}
		}
		if cnt == 0 {
			return
		}
		b.readAt.Store(readAt)
		b.n.Store(int32(cnt))
		for i := 0; i < cnt; i++ {
			b.start.Store(time.Now().UnixNano())
			run(&b.slots[i], gen, time.Unix(0, readAt))
		}
		b.start.Store(0)
	}
}

// answerDefault answers a handed event with the default, reports it and
// closes its fd: for the last-resort reader and for what is left at
// shutdown.
func (e *Engine) answerDefault(h handed, v fanotify.Verdict) {
	if h.pid == e.selfPID {
		v = fanotify.Allow
	}
	e.perm.Respond(h.fd, v)
	e.permEvents.Add(1)
	if h.pid == e.selfPID {
		fanotify.CloseFD(h.fd)
		return
	}
	var ev fsmon.Event
	e.defaultEvent(&ev, h.fd, h.pid, h.op, v, fsmon.ReasonDeadline, time.Unix(0, h.readAt))
	fanotify.CloseFD(h.fd)
	e.countDefault(v, 1)
	e.enqueue(&ev)
}

// decidedState is the slot state that stores verdict v.
func decidedState(v fanotify.Verdict) uint64 {
	if v == fanotify.Deny {
		return slotDecidedDeny
	}
	return slotDecidedAllow
}

type permSlot struct {
	fd    int32
	pid   int32
	mask  fanotify.Mask
	op    fsmon.Op // opOf the event, for its report
	state atomic.Uint64
}

// permBatch is the batch the loop is working on, shared with the
// watchdog.
type permBatch struct {
	gen    atomic.Uint64
	start  atomic.Int64 // unix nanoseconds the current decision began; 0 when idle
	readAt atomic.Int64 // unix nanoseconds the batch was read, for the watchdog's reports
	n      atomic.Int32
	slots  [maxPermSlots]permSlot
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
	run := func(s *permSlot, gen uint64, readAt time.Time) { e.handlePerm(s, gen, readAt, &d) }
	handle := func(b []byte) {
		readAt := time.Now()
		batch.readAt.Store(readAt.UnixNano())
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
			s.fd, s.pid, s.mask, s.op = ev.FD, ev.PID, ev.Mask, opOf(ev)
			s.state.Store(gen << slotBits)
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
		batch.start.Store(0)
		// What the watchdog took from a stuck stand-in, if this loop
		// reads first.
		e.takeHandoffs(batch, run)
		e.exes.End(d.cached)
		d.cached = false
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
// returns the slot's final state: slotLoop when the loop's answer is the
// one the kernel got, slotLate when the watchdog wrote the verdict the
// loop had stored, slotDefault when it wrote the default.
func (e *Engine) answer(s *permSlot, gen uint64, v fanotify.Verdict) uint64 {
	base := gen << slotBits
	if s.state.CompareAndSwap(base|slotJudging, base|slotLoop) || s.state.CompareAndSwap(base|decidedState(v), base|slotLoop) {
		if err := e.perm.Respond(s.fd, v); err != nil {
			e.log.Error("answering permission event", "err", err)
		}
		return slotLoop
	}
	// Answered already by the loop (a second call, from the recovery of a
	// panic): nothing to do. Claimed by the watchdog: wait for its write
	// before the fd may be closed, so the number cannot be reused under
	// its answer.
	for {
		switch st := s.state.Load(); st {
		case base | slotLoop, base | slotDefault, base | slotLate:
			return st & slotMask
		}
		runtime.Gosched()
	}
}

// defaultVerdict is the answer for a decision that is stuck or failed.
func (e *Engine) defaultVerdict() fanotify.Verdict {
	if e.opts.Default == FailClosed {
		return fanotify.Deny
	}
	return fanotify.Allow
}

// countDefault counts n default answers v.
func (e *Engine) countDefault(v fanotify.Verdict, n uint64) {
	e.timeouts[answerOf(v)].Add(n)
}

func answerOf(v fanotify.Verdict) fsmon.Answer {
	if v == fanotify.Deny {
		return fsmon.AnswerDeny
	}
	return fsmon.AnswerAllow
}

// defaultEvent is the report of an open that got the default answer v:
// what is known of it without blocking (the path of the event's fd,
// which must still be open, and the pid), no more. It is built after the
// answer; enqueued after the fd's owner may go on.
func (e *Engine) defaultEvent(ev *fsmon.Event, fd, pid int32, op fsmon.Op, v fanotify.Verdict, why fsmon.Reason, readAt time.Time) {
	var buf [unix.PathMax]byte
	path := ""
	if n, err := fsys.FDPath(int(fd), buf[:]); err == nil {
		path = string(buf[:n])
	}
	*ev = fsmon.Event{
		Time:     readAt,
		Kind:     fsmon.KindTimeout,
		Op:       op,
		Path:     path,
		Process:  fsmon.Process{PID: pid, UserID: -1},
		Count:    1,
		Decision: time.Since(readAt),
		Answer:   answerOf(v),
		Reason:   why,
	}
}

// recoverPerm, deferred, answers the event of a decision that panicked.
// A bug must not take the daemon down (and the protection with it). Past
// phase 1 the policy's verdict is known and is the answer; within it the
// event gets the default, and is reported.
func (e *Engine) recoverPerm(s *permSlot, gen uint64, readAt time.Time) {
	r := recover()
	if r == nil {
		return
	}
	base := gen << slotBits
	switch st := s.state.Load(); st {
	case base | slotDecidedAllow:
		e.answer(s, gen, fanotify.Allow)
	case base | slotDecidedDeny:
		e.answer(s, gen, fanotify.Deny)
	case base | slotJudging:
		v := e.defaultVerdict()
		if e.answer(s, gen, v) == slotLoop {
			var ev fsmon.Event
			e.defaultEvent(&ev, s.fd, s.pid, s.op, v, fsmon.ReasonPanic, readAt)
			e.countDefault(v, 1)
			e.enqueue(&ev)
		}
	}
	e.log.Error("permission decision failed; answered", "panic", r, "stack", string(debug.Stack()))
}

func (e *Engine) handlePerm(s *permSlot, gen uint64, readAt time.Time, d *decision) {
	if !claim(s, gen) {
		return // handed to another reader
	}
	e.permEvents.Add(1)
	defer fanotify.CloseFD(s.fd)
	defer e.recoverPerm(s, gen, readAt)
	if s.pid == e.selfPID {
		// Our own opens are answered at once, never decided.
		e.answer(s, gen, fanotify.Allow)
		return
	}
	// Phase 1. A content event (a read, write, mmap or truncate of a
	// protected file, content.go) remembered as allowed for this
	// program run is answered from memory.
	content := s.mask.Any(contentEvents)
	if content {
		if e.judgeContent(s, d) {
			e.answer(s, gen, fanotify.Allow)
			e.decisions.Observe(time.Since(readAt))
			return
		}
	} else {
		e.judge(s, d)
	}
	v := d.verdict()
	if d.viaDir != nil && !content {
		// Covered by its name only: a file new in a marked directory.
		// It gets marks of its own before the answer (part of phase 1:
		// a mark and a table entry, never a wait for a walk), so that
		// its creator writes only to a marked inode and a link made
		// elsewhere meets the mark (docs/design/deny.md §2).
		e.adopt(s.fd, d)
	}
	base := gen << slotBits
	if !s.state.CompareAndSwap(base|slotJudging, base|decidedState(v)) {
		// Phase 1 missed the deadline: the watchdog answered with the
		// default and reports it; this verdict comes too late.
		e.answer(s, gen, v)
		return
	}
	// Content events are reported once per program run and file: one
	// comes with every read(2).
	report := d.kind != 0
	if content {
		report = e.reportContent(d)
	}
	if report {
		e.gather(s, d) // phase 2: only reported events pay for it
	}
	// From here the slot holds the verdict: whoever writes the answer,
	// the loop or the watchdog (late), it is the policy's.
	e.answer(s, gen, v)
	if d.pass && !content {
		// After the answer, while the event fd is open (neighbour.go).
		e.pass(s.fd, d)
	}
	took := time.Since(readAt)
	e.decisions.Observe(took)
	// A late answer is still the policy's: reported as any other.
	if !report {
		return
	}
	e.reportDecided(s, d, readAt, took, content, &e.lastExec)
}

// reportDecided reports the decision d a reader (the loop, or a stand-in
// with its own lastExec) answered: after the answer, as every report.
func (e *Engine) reportDecided(s *permSlot, d *decision, readAt time.Time, took time.Duration, content bool, lastExec *execKey) {
	if !content {
		e.foldOpen(s, d)
		// An exec makes two permission events, FAN_OPEN_EXEC_PERM and
		// then FAN_OPEN_PERM of the same file by the same process: one
		// report.
		key := execKey{s.pid, d.id}
		if s.mask.Any(fanotify.OpenExecPerm) {
			*lastExec = key
		} else if *lastExec == key {
			*lastExec = execKey{}
			return
		} else {
			*lastExec = execKey{}
		}
	}
	ev := fsmon.Event{
		Time:      readAt,
		Kind:      d.kind,
		Op:        s.op,
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

// watchdog answers what is pending of the loop's batch once the
// decision the loop is in is older than the deadline: the loop is stuck
// (a /proc read that does not return), and what waits behind that
// decision must not wait for it. A slot whose phase 1 is done gets its
// own verdict (late); the rest get the default, and are reported.
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
	v := e.defaultVerdict()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		stuck := e.rescueBatch(e.batch, v)
		for i := range e.standins {
			sb := &e.standins[i]
			if sb.live.Load() && e.rescueBatch(&sb.batch, v) {
				stuck = true
			}
		}
		if stuck {
			e.ensureReader(v)
		}
	}
}

// rescueBatch answers what is pending of batch b once the decision its
// reader is in is older than the deadline, and reports whether it was.
func (e *Engine) rescueBatch(b *permBatch, v fanotify.Verdict) bool {
	// Seqlock: start is only trusted as the start of a decision of
	// batch gen when gen is the same before and after it is read. The
	// reader zeroes start before it moves to the next generation, and a
	// slot of a later batch never matches gen in the CASes below.
	gen := b.gen.Load()
	start := b.start.Load()
	readAt := time.Unix(0, b.readAt.Load())
	if gen != b.gen.Load() || start == 0 || time.Since(time.Unix(0, start)) < e.opts.DecisionTimeout {
		return false
	}
	n := int(b.n.Load())
	base := gen << slotBits
	defaulted, late, handedOff := 0, 0, 0
	for i := 0; i < n; i++ {
		s := &b.slots[i]
		st := s.state.Load()
		if st>>slotBits != gen {
			continue
		}
		switch st & slotMask {
		case slotDecidedAllow, slotDecidedDeny:
			// Decided, stuck gathering the report's facts: the
			// policy's verdict, late.
			pv := fanotify.Allow
			if st&slotMask == slotDecidedDeny {
				pv = fanotify.Deny
			}
			if s.state.CompareAndSwap(st, base|slotWatchdog) {
				if err := e.perm.Respond(s.fd, pv); err != nil {
					e.log.Error("answering late permission event", "err", err)
				}
				s.state.Store(base | slotLate)
				late++
			}
		case slotPending, slotJudging:
			if !s.state.CompareAndSwap(st, base|slotWatchdog) {
				continue
			}
			if st&slotMask == slotPending {
				// Not begun: another reader decides it.
				select {
				case e.handoff <- handed{s.fd, s.pid, s.mask, s.op, readAt.UnixNano()}:
					s.state.Store(base | slotHanded)
					handedOff++
					continue
				default: // no room: the default, as for a stuck one
				}
			}
			if err := e.perm.Respond(s.fd, v); err != nil {
				e.log.Error("answering late permission event", "err", err)
			}
			// The fd stays open until the state says answered: its
			// reader waits for it.
			var ev fsmon.Event
			e.defaultEvent(&ev, s.fd, s.pid, s.op, v, fsmon.ReasonDeadline, readAt)
			s.state.Store(base | slotDefault)
			e.countDefault(v, 1)
			e.enqueue(&ev)
			defaulted++
		}
	}
	if handedOff > 0 {
		// A reader blocked in read(2) takes the handed events after the
		// event this makes.
		go e.wake.wake()
	}
	if late > 0 {
		e.lateAnswers.Add(uint64(late))
		e.log.Warn("permission decisions were late gathering report facts; the policy's verdict written", "count", late, "deadline", e.opts.DecisionTimeout)
	}
	if defaulted > 0 {
		e.log.Warn("permission decisions missed their deadline; default answer written",
			"count", defaulted, "deadline", e.opts.DecisionTimeout, "answer", v.String())
	}
	return true
}

// lastResort reads and answers permission events with the default while
// every reader is stuck: the loop and maxStandins stand-ins. It makes no
// decision (whatever held them up could hold it up too): read, answer,
// report, close.
func (e *Engine) lastResort(v fanotify.Verdict) {
	runtime.LockOSThread() // for good, as the loop's
	raisePriority(e.opts.Priority, rtPriority)
	defer e.readerDone()
	defer e.lastResortOn.Store(false)
	buf := make([]byte, 4096)
	drain := func() {
		for {
			select {
			case h := <-e.handoff:
				e.answerDefault(h, v)
			default:
				return
			}
		}
	}
	defer drain()
	for e.allStuck() && !e.stopping.Load() {
		drain()
		n, err := e.perm.Read(buf)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || !transient(err) {
				return
			}
			continue
		}
		readAt := time.Now()
		answered := 0
		fanotify.Parse(buf[:n], func(ev *fanotify.Event) {
			if ev.FD < 0 {
				return
			}
			if ev.PID == e.selfPID {
				e.perm.Respond(ev.FD, fanotify.Allow)
				fanotify.CloseFD(ev.FD)
				answered++
				return
			}
			e.perm.Respond(ev.FD, v)
			var out fsmon.Event
			e.defaultEvent(&out, ev.FD, ev.PID, opOf(ev), v, fsmon.ReasonDeadline, readAt)
			fanotify.CloseFD(ev.FD)
			e.countDefault(v, 1)
			e.enqueue(&out)
			answered++
		})
		e.permEvents.Add(uint64(answered))
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
