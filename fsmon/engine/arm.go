package engine

import (
	"sort"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/marks"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
)

// armLoop reads the arming group (docs/design/deny.md §2). Its marks
// have no event bits, so it never has an event to read; should the
// kernel ever queue one, it is allowed at once: a mistake there must
// not hold an open or a read anywhere on an armed file system.
func (e *Engine) armLoop() error {
	buf := make([]byte, 4096)
	return e.readLoop("arming", e.arm.File(), e.arm.Read, buf, func(b []byte) {
		n := 0
		var mask fanotify.Mask
		var pid int32
		fanotify.Parse(b, func(ev *fanotify.Event) {
			if ev.Mask.Any(fanotify.PermEvents) && ev.FD >= 0 {
				e.arm.Respond(ev.FD, fanotify.Allow)
			}
			fanotify.CloseFD(ev.FD)
			mask, pid = ev.Mask, ev.PID
			n++
		})
		e.armEvents.Add(uint64(n))
		e.log.Error("the arming group got events; allowed (it should never get any: a bug of the daemon or of the kernel)", "events", n, "mask", uint64(mask), "pid", pid)
	})
}

// closeArm closes the arming group, which removes its marks.
func (e *Engine) closeArm() {
	if e.arm != nil {
		e.arm.Close()
	}
}

// withoutPreContent lists every block filter in force with the number of
// its protected files whose marks lack pre-content events
// (marks.WithoutPreContent): 0 for the rest, so that the gauge has a
// series per filter before the first.
func (e *Engine) withoutPreContent() []fsmon.FilterCount {
	counts := e.marks.WithoutPreContent()
	var out []fsmon.FilterCount
	seen := map[marks.FilterKey]bool{}
	e.mu.RLock()
	for _, g := range e.groups {
		for _, r := range g.Rules {
			k := marks.FilterKey{Profile: r.Profile.Name, Filter: r.Name}
			if r.Blocks() && !seen[k] {
				seen[k] = true
				out = append(out, fsmon.FilterCount{Profile: k.Profile, Filter: k.Filter, Count: counts[k]})
			}
		}
	}
	e.mu.RUnlock()
	for k, n := range counts {
		if !seen[k] {
			out = append(out, fsmon.FilterCount{Profile: k.Profile, Filter: k.Filter, Count: n})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Profile != out[j].Profile {
			return out[i].Profile < out[j].Profile
		}
		return out[i].Filter < out[j].Filter
	})
	return out
}
