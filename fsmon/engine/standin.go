package engine

import (
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
)

// maxStandins bounds the stand-in readers alive at once, stuck ones
// included: past it, the last-resort reader answers with the default.
const maxStandins = 4

// standin is a reader that stands in for a stuck permission loop (or a
// stuck stand-in). It decides: phase 1 as the loop does, with the
// policy's answer, but it takes no lock the stuck reader may hold: it
// leaves the executable cache alone (the opener's /proc/PID/exe is
// stat'ed, which takes no lock a read of /proc can hold), has an allow
// list cache of its own, and reports with what cannot block (no command
// line, no user). The watchdog watches its batch as it watches the
// loop's.
type standin struct {
	live    atomic.Bool
	batch   permBatch
	d       decision
	allow   allowIDs
	content contentCache // the loop's is the loop's alone
}

// stuck reports whether reader batch b is in a decision past the
// deadline.
func (e *Engine) stuck(b *permBatch) bool {
	start := b.start.Load()
	return start != 0 && time.Since(time.Unix(0, start)) >= e.opts.DecisionTimeout
}

// allStuck reports whether the loop and every stand-in are stuck (or
// gone), so that only the last-resort reader is left.
func (e *Engine) allStuck() bool {
	if !e.stuck(e.batch) {
		return false
	}
	for i := range e.standins {
		sb := &e.standins[i]
		if !sb.live.Load() || !e.stuck(&sb.batch) {
			return false
		}
	}
	return true
}

// ensureReader makes sure a reader that is not stuck reads the
// permission group: a fresh stand-in while fewer than maxStandins are
// alive, else the last-resort reader. The watchdog calls it when a
// reader is stuck.
func (e *Engine) ensureReader(v fanotify.Verdict) {
	if !e.stuck(e.batch) {
		return // the loop reads
	}
	free := -1
	for i := range e.standins {
		sb := &e.standins[i]
		if !sb.live.Load() {
			if free < 0 {
				free = i
			}
			continue
		}
		if !e.stuck(&sb.batch) {
			return // a stand-in reads
		}
	}
	if free >= 0 {
		sb := &e.standins[free]
		sb.live.Store(true)
		e.readers.Add(1)
		e.standinsStarted.Add(1)
		go e.standIn(sb)
		return
	}
	if e.lastResortOn.CompareAndSwap(false, true) {
		e.readers.Add(1)
		e.lastResorts.Add(1)
		e.log.Error("every permission reader is stuck; the last-resort reader answers with the default", "standins", maxStandins, "answer", v.String())
		go e.lastResort(v)
	}
}

// readerDone is the end of a stand-in or of the last-resort reader.
func (e *Engine) readerDone() {
	e.readers.Add(-1)
	select {
	case e.readerExit <- struct{}{}:
	default:
	}
}

// standIn reads and decides permission events while the loop is stuck.
func (e *Engine) standIn(sb *standin) {
	runtime.LockOSThread() // for good, as the loop's
	raisePriority(e.opts.Priority, rtPriority)
	defer e.readerDone()
	defer sb.live.Store(false)
	buf := make([]byte, 4096)
	b := &sb.batch
	d := &sb.d
	d.allow = &sb.allow
	d.content = &sb.content
	var lastExec execKey
	run := func(s *permSlot, gen uint64, readAt time.Time) { e.standinPerm(s, gen, readAt, d, &lastExec) }
	defer e.takeHandoffs(b, run)
	for e.stuck(e.batch) && !e.stopping.Load() {
		e.takeHandoffs(b, run)
		n, err := e.perm.Read(buf)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || !transient(err) {
				return
			}
			continue
		}
		// What it read is decided, even if the loop is back by now: it
		// is this reader's to answer.
		readAt := time.Now()
		b.readAt.Store(readAt.UnixNano())
		gen := b.gen.Add(1)
		cnt := 0
		fanotify.Parse(buf[:n], func(ev *fanotify.Event) {
			if ev.FD < 0 || cnt >= maxPermSlots {
				return
			}
			s := &b.slots[cnt]
			s.fd, s.pid, s.mask, s.op = ev.FD, ev.PID, ev.Mask, opOf(ev)
			s.state.Store(gen << slotBits)
			cnt++
		})
		b.n.Store(int32(cnt))
		for i := 0; i < cnt; i++ {
			b.start.Store(time.Now().UnixNano())
			e.standinPerm(&b.slots[i], gen, readAt, d, &lastExec)
		}
		b.start.Store(0)
	}
}

// standinPerm is handlePerm for a stand-in: phase 1 and the answer, and
// a report with the facts that cannot block.
func (e *Engine) standinPerm(s *permSlot, gen uint64, readAt time.Time, d *decision, lastExec *execKey) {
	if !claim(s, gen) {
		return // handed to another reader
	}
	e.permEvents.Add(1)
	defer fanotify.CloseFD(s.fd)
	defer e.recoverPerm(s, gen, readAt)
	if s.pid == e.selfPID {
		e.answer(s, gen, fanotify.Allow)
		return
	}
	d.cached = false // the executable cache is the loop's
	content := s.mask.Any(contentEvents)
	if content {
		e.judgeContent(s, d) // uncached: never from memory
	} else {
		e.judge(s, d)
	}
	v := d.verdict()
	if d.viaDir != nil && !content {
		// A new file gets its marks before its answer here too
		// (docs/design/deny.md §2): Adopt takes only the tables' lock,
		// which no stuck decision holds (it is stuck in /proc).
		e.adopt(s.fd, d)
	}
	base := gen << slotBits
	if !s.state.CompareAndSwap(base|slotJudging, base|decidedState(v)) {
		e.answer(s, gen, v) // the watchdog answered with the default
		return
	}
	report := d.kind != 0
	if content {
		report = e.reportContent(d) // once per program run and file
	}
	if report {
		d.group = e.host
		if e.containers.Load() {
			d.group = e.groupOf(s.pid)
		}
		d.proc = e.who.Quick(&d.who, &d.bufs)
		d.proc.ExecutablePath = d.group.Inside(d.proc.ExecutablePath)
		e.parentFromTable(d.group, &d.proc)
		d.path = strings.Clone(d.group.Inside(e.fdPath(s.fd, d)))
	}
	e.answer(s, gen, v) // the verdict, from the stand-in or the watchdog
	if d.pass && !content {
		// After the answer, while the event fd is open (neighbour.go).
		e.pass(s.fd, d)
	}
	took := time.Since(readAt)
	e.decisions.Observe(took)
	e.standinAnswers.Add(1)
	if !report {
		return
	}
	e.reportDecided(s, d, readAt, took, content, lastExec)
}
