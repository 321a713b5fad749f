package engine

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// newWalker places marks for group g into t. The walker borrows the
// group's root fd.
func (e *Engine) newWalker(t *tables, g *group) *walker {
	return &walker{e: e, t: t, g: g, rootFD: g.RootFD, fsids: map[uint64][8]byte{}}
}

// ApplyResult says what placing a policy did.
type ApplyResult struct {
	Groups      int
	Dirs, Files int
	Errors      int   // objects that could not be marked
	FirstError  error // the first of them
	// Incomplete: the object or inotify watch limit was reached; the
	// engine does not report itself ready.
	Incomplete bool
	Took       time.Duration
}

// ErrPartial says a policy is in force, but only partly: some objects
// could not be marked (ApplyResult says how many, and why the first).
var ErrPartial = errors.New("the configuration is only partly in force")

// Apply places the marks of p in every group and makes it the policy in
// force. The old policy's marks stay until the new ones are placed, so
// nothing covered by both is ever uncovered. When some objects could not
// be marked, p is in force all the same and the error wraps ErrPartial
// and the first cause.
func (e *Engine) Apply(p *policy.Policy) (ApplyResult, error) {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	start := time.Now()
	e.ready.Store(false)
	e.unmarked.Store(0) // what this configuration's walks fail to mark
	t := newTables()
	e.mu.RLock()
	groups := make([]*group, 0, len(e.groups))
	for _, g := range e.groups {
		groups = append(groups, g)
	}
	e.mu.RUnlock()
	res := ApplyResult{}
	for _, g := range groups {
		rules := p.RulesFor(g.Target())
		w := e.newWalker(t, g)
		w.walkRules(rules)
		res.Errors += w.errs
		if res.FirstError == nil {
			res.FirstError = w.first
		}
		res.Incomplete = res.Incomplete || w.incomplete
		e.mu.Lock()
		g.Rules = rules
		e.mu.Unlock()
		e.checkAllowPaths(g, rules)
		if len(rules) > 0 || g.IsHost() {
			res.Groups++
		}
	}
	e.mu.Lock()
	old := e.tables
	e.tables = t
	e.policy = p
	res.Dirs, res.Files = len(t.dirs), len(t.files)
	e.mu.Unlock()
	// Namespaces no profile covered may be covered now.
	clear(e.unmonitored)
	e.allowGen.Add(1)
	e.unmarkStale(old, t)
	e.ready.Store(!res.Incomplete)
	res.Took = time.Since(start)
	if res.Errors > 0 {
		return res, fmt.Errorf("%w: %d objects not marked, the first: %w", ErrPartial, res.Errors, res.FirstError)
	}
	return res, nil
}

// checkAllowPaths warns of allow entries that name no file in the
// group's root: a typo (/usr/sbin/ngnix) would deny the real program
// without a hint.
func (e *Engine) checkAllowPaths(g *group, rules []*policy.Rule) {
	for _, r := range rules {
		if !r.Blocks() {
			continue
		}
		for _, p := range r.AllowExePaths() {
			if e.resolveID(g, p) == (devIno{}) {
				e.log.Warn("allow entry names no file: it allows nobody", "entry", p, "filter", r.Name, "profile", r.Profile.Name, "group", g.Name)
			}
		}
	}
}

// rewalk places the current policy again (after an inotify overflow):
// it adds what is missing and keeps what is there. The events lost may
// also have said that directories went (IN_DELETE_SELF, IN_IGNORED):
// those are forgotten first, so that a new directory with a reused inode
// number is not taken for the one that went (a file's going is reported
// by fanotify, whose queue does not overflow).
func (e *Engine) rewalk() {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	e.mu.RLock()
	groups := make([]*group, 0, len(e.groups))
	for _, g := range e.groups {
		groups = append(groups, g)
	}
	dirs := make([]*dirEntry, 0, len(e.tables.dirs))
	for _, d := range e.tables.dirs {
		dirs = append(dirs, d)
	}
	e.mu.RUnlock()
	for _, d := range dirs {
		fd, ok, err := e.openKey(d.handle)
		if err == nil && ok {
			unix.Close(fd)
		}
		if ok && errors.Is(err, unix.ESTALE) {
			// Gone, and its watch with its inode.
			e.dropDir(d, true)
		}
	}
	for _, g := range groups {
		w := e.newWalker(e.tables, g)
		w.again = true
		w.walkRules(g.Rules)
	}
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
