package engine

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

func (e *Engine) newWalker(t *tables) *walker {
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		fd = -1
	}
	return &walker{e: e, t: t, rootFD: fd, fsids: map[uint64][8]byte{}}
}

func (w *walker) close() {
	if w.rootFD >= 0 {
		unix.Close(w.rootFD)
	}
}

// hostRules are the rules of the profiles that cover the host.
func hostRules(p *policy.Policy) []*policy.Rule {
	var rs []*policy.Rule
	for _, pr := range p.Profiles {
		if pr.AppliesToHost() {
			rs = append(rs, pr.Rules...)
		}
	}
	return rs
}

// ApplyResult says what placing a policy did.
type ApplyResult struct {
	Dirs, Files int
	Errors      int   // objects that could not be marked
	FirstError  error // the first of them
	Took        time.Duration
}

// Apply places the marks of p and makes it the policy in force. The old
// policy's marks stay until the new ones are placed, so nothing covered
// by both is ever uncovered.
func (e *Engine) Apply(p *policy.Policy) (ApplyResult, error) {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	start := time.Now()
	e.ready.Store(false)
	t := newTables()
	w := e.newWalker(t)
	defer w.close()
	if w.rootFD < 0 {
		return ApplyResult{}, fmt.Errorf("opening /: cannot resolve paths")
	}
	w.walkRules(hostRules(p))
	e.mu.Lock()
	old := e.tables
	e.tables = t
	e.policy = p
	e.mu.Unlock()
	e.unmarkStale(old, t)
	e.ready.Store(true)
	return ApplyResult{Dirs: len(t.dirs), Files: len(t.files), Errors: w.errs, FirstError: w.first, Took: time.Since(start)}, nil
}

// rewalk places the current policy again (after an inotify overflow).
func (e *Engine) rewalk() {
	e.mu.RLock()
	p := e.policy
	e.mu.RUnlock()
	if p == nil {
		return
	}
	e.applyMu.Lock()
	w := e.newWalker(e.tables)
	w.walkRules(hostRules(p))
	w.close()
	e.applyMu.Unlock()
}

// unmarkStale removes what old marked and cur does not.
func (e *Engine) unmarkStale(old, cur *tables) {
	for id, d := range old.dirs {
		n := cur.dirs[id]
		if n == nil {
			if d.wd >= 0 {
				inUse := false
				for _, x := range cur.dirs {
					if x.wd == d.wd {
						inUse = true
						break
					}
				}
				if !inUse {
					e.ino.Remove(d.wd)
				}
			}
			e.unmark(d.handle, d.perm, d.notif)
			continue
		}
		e.unmark(d.handle, d.perm&^n.perm, d.notif&^n.notif)
	}
	for id, f := range old.files {
		n := cur.files[id]
		if n == nil {
			e.unmark(f.handle, f.perm, f.notif)
			continue
		}
		e.unmark(f.handle, f.perm&^n.perm, f.notif&^n.notif)
	}
}
