package engine

import (
	"runtime/debug"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
)

// changeOps maps notification bits to report operations, in the order
// they are reported when the kernel merged several into one event.
var changeOps = []struct {
	mask fanotify.Mask
	op   fsmon.Op
}{
	{fanotify.Create, fsmon.OpCreate},
	{fanotify.MovedFrom | fanotify.MovedTo, fsmon.OpRename},
	{fanotify.Modify, fsmon.OpWrite},
	{fanotify.Attrib, fsmon.OpAttrib},
	{fanotify.Delete, fsmon.OpDelete},
}

func (e *Engine) notifyLoop() error {
	buf := make([]byte, 256<<10)
	var rules []grule
	return e.readLoop("notification", e.notif.File(), e.notif.Read, buf, func(b []byte) {
		if f := e.holdNotify.Load(); f != nil {
			(*f)()
		}
		now := time.Now()
		perr := fanotify.Parse(b, func(ev *fanotify.Event) {
			if ev.Mask.Any(fanotify.QOverflow) {
				e.overflowFan.Add(1)
				e.dropKernel.Add(1)
				return
			}
			e.notifyEvents.Add(1)
			if ev.PID == e.selfPID {
				// The daemon's own changes are not reported. But the
				// last reference to a deleted file may be the daemon's
				// (a walk's O_PATH fd, a permission event's fd): the
				// inode then goes in its name, and must be forgotten
				// all the same, or a file that gets its number later
				// inherits its rules.
				if ev.Mask.Any(fanotify.DeleteSelf) && ev.File.Valid() {
					e.marks.ForgetFile(ev.File)
					e.filesGone.Add(1)
				}
				return
			}
			rules = e.notifyEventSafe(ev, now, rules[:0])
		})
		if perr != nil {
			e.log.Warn("malformed notification event batch", "err", perr)
		}
	})
}

// notifyEventSafe is notifyEvent behind a recover: a bug costs one
// report, never the daemon.
func (e *Engine) notifyEventSafe(ev *fanotify.Event, now time.Time, rules []grule) (out []grule) {
	defer func() {
		if r := recover(); r != nil {
			e.log.Error("notification event failed", "panic", r, "stack", string(debug.Stack()))
			out = rules[:0]
		}
	}()
	return e.notifyEvent(ev, now, rules)
}

func (e *Engine) notifyEvent(ev *fanotify.Event, now time.Time, rules []grule) []grule {
	if ev.Mask.Any(fanotify.DeleteSelf) && ev.File.Valid() {
		// The last link is gone and the inode freed: forget it, so a
		// file that gets its number later does not inherit its rules.
		// The unlink itself was reported by the directory's event.
		e.marks.ForgetFile(ev.File)
		e.filesGone.Add(1)
		return rules
	}
	// A view for the lookups; the reported path is a copy.
	rules, p := e.marks.Changed(ev.Dir, ev.File, proc.View(ev.Name), rules)
	if len(rules) == 0 {
		return rules
	}
	rule := pickRule(rules)
	// The file's group: the process may be gone before it can be asked.
	proc := e.processOf(rule.Group, ev.PID, now)
	for _, co := range changeOps {
		if !ev.Mask.Any(co.mask) {
			continue
		}
		out := fsmon.Event{
			Time:      now,
			Kind:      fsmon.KindChange,
			Op:        co.op,
			Mode:      rule.Mode,
			Profile:   rule.Profile.Name,
			Filter:    rule.Name,
			Path:      p,
			Process:   proc,
			Container: rule.Group.Container(),
			Count:     1,
		}
		e.facts.change(&out, rule)
	}
	return rules
}

// pickRule chooses the rule a change is reported under: a block filter
// before a monitor one, then the first in the configuration.
func pickRule(rules []grule) grule {
	best := rules[0]
	for _, r := range rules[1:] {
		if r.Blocks() && !best.Blocks() || r.Blocks() == best.Blocks() && r.ID < best.ID {
			best = r
		}
	}
	return best
}

// dispatchHold is how long the dispatcher lets reports gather after
// handing some to the sink.
const dispatchHold = 250 * time.Microsecond

// dispatch hands queued events to the sink. The first event after a
// quiet spell wakes it at once; after each round it holds off for
// dispatchHold, so that a stream of reports costs one wakeup a round
// rather than one an event. A wakeup is a context switch, and on a busy
// CPU it lands on the path of the next open the permission loop answers.
func (e *Engine) dispatch() {
	for ev := range e.queue {
		e.report(&ev)
		for more := true; more; {
			select {
			case ev, ok := <-e.queue:
				if !ok {
					return
				}
				e.report(&ev)
			default:
				more = false
			}
		}
		time.Sleep(dispatchHold)
	}
}

// report hands one event to the sink. A learned event goes into the
// learned set first: the set is what was reported, learned off the
// permission loop's path (the loop never waits for the set's lock).
func (e *Engine) report(ev *fsmon.Event) {
	if e.learned.Observe(ev) && e.learnStore != nil {
		e.learnStore.Changed()
	}
	e.opts.Sink.Handle(ev)
}

// enqueue hands an event to the sinks without ever blocking.
func (e *Engine) enqueue(ev *fsmon.Event) {
	select {
	case e.queue <- *ev:
	default:
		e.dropQueue.Add(1)
	}
}
