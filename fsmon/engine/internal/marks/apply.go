package marks

import (
	"errors"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// newWalker places marks for group g into t. The walker borrows the
// group's root fd.
func (m *Marks) newWalker(t *Tables, g *group) *walker {
	return &walker{m: m, t: t, g: g, rootFD: g.RootFD, fsids: map[uint64][8]byte{}, openable: map[uint64]bool{}}
}

// Walked says what one walk placed.
type Walked struct {
	Errors int   // objects that could not be marked
	First  error // the first of them
	// Incomplete: something the configuration asks for could not be
	// placed (the object or inotify watch limit, or a mark of an
	// object that answers opens).
	Incomplete bool
}

// Begin starts a reload: a new, empty set of tables for Walk to fill
// while the set in force stays in force. What the new configuration's
// walks fail to mark is counted from zero, and nothing is ready until
// Retire.
func (p Placement) Begin() *Tables {
	p.m.ready.Store(false)
	p.m.unmarked.Store(0)
	p.m.budgetCut.Store(0)
	t := newTables()
	return t
}

// Walk places the marks of g's rules into t from g's root down. t is a
// set Begin made, or Live for the tables in force (a new container).
func (p Placement) Walk(t *Tables, g *group, rules []*policy.Rule) Walked {
	w := p.m.newWalker(t, g)
	w.armRoots(rules)
	w.walkRules(rules)
	return Walked{Errors: w.errs, First: w.first, Incomplete: w.incomplete}
}

// Live is the set of tables in force.
func (p Placement) Live() *Tables { return p.m.tables }

// Swap puts t in force and returns the set it replaces, whose marks stay
// until Retire: nothing covered by both is ever uncovered.
func (p Placement) Swap(t *Tables) (old *Tables) {
	p.m.mu.Lock()
	old = p.m.tables
	p.m.tables = t
	p.m.mu.Unlock()
	return old
}

// Retire removes what old marked and the set in force does not, and
// says whether the set in force is ready: everything its walks were
// asked for is placed.
func (p Placement) Retire(old *Tables) {
	cur := p.m.tables
	p.m.unmarkStale(old, cur)
	p.m.disarmUnneeded()
	p.m.ready.Store(!cur.incomplete)
}

// Rewalk places the rules of groups again (after an inotify overflow):
// it adds what is missing and keeps what is there. The events lost may
// also have said that directories went (IN_DELETE_SELF, IN_IGNORED):
// those are forgotten first, so that a new directory with a reused inode
// number is not taken for the one that went (a file's going is reported
// by fanotify, whose queue does not overflow).
func (p Placement) Rewalk(groups []*group) {
	m := p.m
	m.mu.RLock()
	dirs := make([]*Dir, 0, len(m.tables.dirs))
	for _, d := range m.tables.dirs {
		dirs = append(dirs, d)
	}
	m.mu.RUnlock()
	for _, d := range dirs {
		fd, ok, err := m.openKey(d.handle)
		if err == nil && ok {
			unix.Close(fd)
		}
		if ok && errors.Is(err, unix.ESTALE) {
			// Gone, and its watch with its inode.
			m.dropDir(d, true)
		}
	}
	for _, g := range groups {
		w := m.newWalker(m.tables, g)
		w.again = true
		w.walkRules(g.Rules)
	}
}

// unmarkStale removes what old marked and cur does not.
func (m *Marks) unmarkStale(old, cur *Tables) {
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
					m.ino.Remove(d.wd)
				}
			}
			m.unmark(d.handle, d.perm, d.notif)
			continue
		}
		m.unmark(d.handle, d.perm&^n.perm, d.notif&^n.notif)
	}
	for id, f := range old.files {
		n := cur.files[id]
		if n == nil {
			m.unmark(f.handle, f.perm, f.notif)
			continue
		}
		m.unmark(f.handle, f.perm&^n.perm, f.notif&^n.notif)
	}
}

// DropGroup forgets a container that is gone: its marks, watches and
// table entries, and the directory fds kept for its file systems. It
// returns how many directories and files went with it.
func (p Placement) DropGroup(g *group) (dirs, files int) {
	m := p.m
	m.mu.Lock()
	// An inode two groups reach (a volume two containers mount, a host
	// directory bind-mounted into one) keeps its entry and marks for the
	// groups that remain: only g's rules go. Entries left without rules
	// go with their marks.
	var goneDirs []*Dir
	var goneFiles []*fileEntry
	for _, d := range m.tables.dirs {
		n := 0
		for _, rr := range d.rels {
			if rr.rule.Group != g {
				d.rels[n] = rr
				n++
			}
		}
		d.rels = d.rels[:n]
		switch {
		case n == 0:
			goneDirs = append(goneDirs, d)
		case d.g == g:
			d.g = d.rels[0].rule.Group
		}
	}
	for _, f := range m.tables.files {
		n := 0
		for _, r := range f.rules {
			if r.Group != g {
				f.rules[n] = r
				n++
			}
		}
		f.rules = f.rules[:n]
		switch {
		case n == 0:
			goneFiles = append(goneFiles, f)
		case f.g == g:
			f.g = f.rules[0].Group
		}
	}
	for _, f := range goneFiles {
		delete(m.tables.files, f.id)
		if m.tables.filesByHandle[f.handle] == f {
			delete(m.tables.filesByHandle, f.handle)
		}
	}
	// Entries of g that another group keeps are that group's now:
	// counted afresh (dropDir below takes the gone directories off).
	// Once per container that goes.
	clear(m.tables.owned)
	for _, d := range m.tables.dirs {
		m.tables.own(d.g)
	}
	for _, f := range m.tables.files {
		m.tables.own(f.g)
	}
	// The directory fds kept for open_by_handle_at of the group's file
	// systems would pin them (a pod's tmpfs volume) after it is gone.
	for fsid, mfd := range m.mountFDs {
		if mfd.g == g {
			unix.Close(mfd.fd)
			delete(m.mountFDs, fsid)
		}
	}
	m.mu.Unlock()
	for _, d := range goneDirs {
		m.dropDir(d, false)
	}
	for _, f := range goneFiles {
		m.unmark(f.handle, f.perm, f.notif)
	}
	m.disarmUnneeded()
	return len(goneDirs), len(goneFiles)
}
