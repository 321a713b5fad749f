package marks

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/inotify"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

const (
	// permDirMask asks for opens of a directory's children.
	permDirMask = fanotify.OpenPerm | fanotify.OpenExecPerm | fanotify.EventOnChild
	// permFileMask asks for opens of the file itself.
	permFileMask = fanotify.OpenPerm | fanotify.OpenExecPerm
	// notifDirMask asks for every change of a directory's entries.
	notifDirMask = fanotify.Modify | fanotify.Attrib | fanotify.Create | fanotify.Delete |
		fanotify.MovedFrom | fanotify.MovedTo | fanotify.EventOnChild | fanotify.OnDir
	// notifFileMask follows a covered file wherever it is linked, and
	// says when it is gone for good so its entry can go too.
	notifFileMask = fanotify.Modify | fanotify.Attrib | fanotify.DeleteSelf
	// inotifyDirMask keeps the tables in step with the tree.
	inotifyDirMask = inotify.Create | inotify.MovedTo | inotify.DeleteSelf | inotify.MoveSelf | inotify.OnlyDir
)

// walker places the marks of a set of rules below one root.
type walker struct {
	m    *Marks
	t    *Tables
	g    *group
	live bool // placing into the tables in force, as events come (not a new set)
	// incomplete: something the configuration asks for could not be
	// placed (out of room, or a mark of a block filter's object failed)
	incomplete bool
	rootFD     int // O_PATH fd of the group's root every path is resolved in (not owned)
	fsids      map[uint64][8]byte
	errs       int
	first      error
	// again: walking anew a tree the tables already hold (after an
	// inotify overflow, whose dropped events may have been creations
	// anywhere): known directories are read again, not passed over.
	again bool
	// stack holds the directories whose children are still to be
	// walked (stack.go); openable says per file system whether
	// handles open.
	stack    []*dirWork
	openable map[uint64]bool
	// budgetTold: the log has said the group's budget is reached.
	budgetTold bool
}

// fail counts an object that could not be marked. guards says the
// object is one that answers opens (covered by a block or report_access
// filter, or on the way to one): then, as when the engine is out of
// room, the configuration is not all in force, and /-/ready and
// fsmon_ready must not say it is.
func (w *walker) fail(what string, err error, guards bool) {
	w.errs++
	w.m.unmarked.Add(1)
	if w.first == nil {
		w.first = fmt.Errorf("%s: %w", what, err)
	}
	if guards || errors.Is(err, ErrTooMany) || errors.Is(err, inotify.ErrWatchLimit) {
		w.t.incomplete = true
		if !w.incomplete {
			w.incomplete = true
			w.m.log.Error("marks could not all be placed: the configuration is only partly in force", "at", what, "err", err)
		}
		if w.t == w.m.tables {
			// Placing into the tables in force (a tree event, a new
			// container, a walk after an overflow): no longer ready
			// until a reload places everything. Apply decides for the
			// set it builds.
			w.m.ready.Store(false)
		}
	}
	w.m.log.Debug("placing marks", "what", what, "err", err)
}

// guarding reports whether any of the relations is to a rule that
// answers opens: the directory, or what it leads to, protects something.
func guarding(rels []ruleRel) bool {
	for _, rr := range rels {
		if rr.rule.WantsOpens() {
			return true
		}
	}
	return false
}

// guardingRules is guarding for the rules that cover a file.
func guardingRules(rules []Rule) bool {
	for _, r := range rules {
		if r.WantsOpens() {
			return true
		}
	}
	return false
}

// openIn resolves p (absolute, in the walker's root) confined to that
// root: symlinks and ".." cannot lead out of it.
func (w *walker) openIn(p string, flags uint64, resolve uint64) (int, error) {
	return fsys.OpenInRoot(w.rootFD, p, flags, resolve)
}

// walkRules places marks for rules from the root down.
func (w *walker) walkRules(rules []*policy.Rule) {
	var rels []ruleRel
	for _, r := range rules {
		if rel := r.RelationOf(nil); rel != 0 {
			rels = append(rels, ruleRel{Rule{w.g, r}, rel})
		}
	}
	fd, err := w.openIn("/", unix.O_DIRECTORY, 0)
	if err != nil {
		w.fail("/", err, guarding(rels))
		return
	}
	x := w.visitDir(fd, nil, "/", nil, rels)
	if x == nil {
		unix.Close(fd)
		return
	}
	w.children(fd, x)
	w.settle(x, fd)
	w.drain()
}

func join(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// mergeRels adds the pairs of add that d lacks, and reports whether any
// was added. Linear in both: a directory above many filters' files (the
// root, /etc) gets one pair per filter, 100,000 of them with as many
// filters, and a pairwise search made start-up quadratic (issue 19).
func mergeRels(d *Dir, add []ruleRel) bool {
	if len(d.rels) == 0 {
		// New: the pairs are one per rule already (walkRules and child
		// build them so).
		d.rels = append(d.rels, add...)
		return len(add) > 0
	}
	at := make(map[Rule]int, len(d.rels))
	for i, x := range d.rels {
		at[x.rule] = i
	}
	added := false
	for _, a := range add {
		if i, ok := at[a.rule]; ok {
			if x := d.rels[i]; x.rel|a.rel != x.rel {
				d.rels[i].rel |= a.rel
				added = true
			}
			continue
		}
		at[a.rule] = len(d.rels)
		d.rels = append(d.rels, a)
		added = true
	}
	return added
}

// relIndex sorts a directory's pairs for its entries: those whose rule
// spells the next component out (and relates to the directory only as a
// step on the way or as its file's parent) can only relate to the entry
// of that name, so each entry is matched against those of its own name
// and the rest, not against every pair (with one filter per file,
// a directory of n filters' files was n × n matches).
type relIndex struct {
	byName map[string][]ruleRel
	rest   []ruleRel
	buf    []ruleRel
}

func newRelIndex(rels []ruleRel, k int) *relIndex {
	ix := &relIndex{byName: map[string][]ruleRel{}}
	for _, rr := range rels {
		if rr.rel&(policy.RelPath|policy.RelUnder) == 0 {
			if lit, ok := rr.rule.LiteralAt(k); ok {
				ix.byName[lit] = append(ix.byName[lit], rr)
				continue
			}
		}
		ix.rest = append(ix.rest, rr)
	}
	return ix
}

// of returns the pairs that may relate to the entry name (valid until
// the next call).
func (ix *relIndex) of(name string) []ruleRel {
	named := ix.byName[name]
	switch {
	case len(ix.rest) == 0:
		return named
	case len(named) == 0:
		return ix.rest
	}
	ix.buf = append(append(ix.buf[:0], ix.rest...), named...)
	return ix.buf
}

func (w *walker) fsid(fd int, dev uint64) [8]byte {
	if f, ok := w.fsids[dev]; ok {
		return f
	}
	f, err := fanotify.Fsid(fd)
	if err != nil {
		w.fail("fstatfs", err, false)
	}
	w.fsids[dev] = f
	w.m.mu.RLock()
	_, ok := w.m.mountFDs[f]
	w.m.mu.RUnlock()
	if ok {
		return f
	}
	// open_by_handle_at takes no O_PATH fd as its mount: open the
	// directory for real (outside the lock: no syscall runs under it).
	// fd may be a file's; then a later directory on this file system
	// registers it.
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		delete(w.fsids, dev)
		return f
	}
	w.m.mu.Lock()
	if _, ok := w.m.mountFDs[f]; ok {
		unix.Close(dfd)
	} else {
		w.m.mountFDs[f] = mountFD{fd: dfd, g: w.g}
	}
	w.m.mu.Unlock()
	return f
}

func (w *walker) handleKey(fd int, dev uint64) string {
	typ, h, err := fanotify.Handle(fd)
	if err != nil {
		return ""
	}
	return fidKey(w.fsid(fd, dev), typ, h)
}

// full reports whether the tables hold as many objects as allowed. The
// limit bounds what monitor-only filters follow; objects that answer
// opens are never cut by it (the caller does not ask), so a tree cannot
// leave a block filter's file protected by its name only.
func (w *walker) full(what string) bool {
	w.m.mu.RLock()
	n := len(w.t.dirs) + len(w.t.files)
	if w.g.IsHost() {
		// The host's objects only: the containers' cannot use up the
		// host's room (each has its own budget, overBudget).
		for _, c := range w.t.owned {
			n -= c
		}
	}
	w.m.mu.RUnlock()
	if n < w.m.maxObjects {
		return false
	}
	w.fail(what, ErrTooMany, false)
	return true
}

// overBudget reports whether the walk's group is a container that holds
// as many objects as its budget allows (Options.GroupBudget): then what
// is left is not marked, whatever filter covers it. A container controls
// how many directories and files its recursive filters cover; without a
// budget of its own it could use up the engine's objects or the user's
// inotify watches, which the host's new directories need. Counted apart
// from the unmarked objects (BudgetCut), and it does not make the engine
// unready: the host's protection is whole, and a container must not be
// able to turn the daemon's readiness off.
func (w *walker) overBudget(what string) bool {
	if w.m.groupBudget <= 0 || w.g.IsHost() {
		return false
	}
	w.m.mu.RLock()
	n := w.t.owned[w.g]
	w.m.mu.RUnlock()
	if n < w.m.groupBudget {
		return false
	}
	w.m.budgetCut.Add(1)
	if !w.budgetTold {
		w.budgetTold = true
		w.m.log.Warn("container reached its object budget: the rest of its files and directories are not marked (raise --containers.max-objects)",
			"container", w.g.Name, "id", w.g.ContainerID, "budget", w.m.groupBudget, "at", what)
	}
	return true
}

// ErrTooMany says the engine tracks as many objects as it may.
var ErrTooMany = errors.New("object limit reached (raise --watch.max-objects)")

// visitDir records and marks the directory fd refers to, found in up
// (nil where the walk starts), and returns it when its children are to
// be walked.
func (w *walker) visitDir(fd int, up *dirWork, logical string, comps []string, rels []ruleRel) *dirWork {
	guards := guarding(rels)
	if len(rels) == 0 || !guards && w.full(logical) || w.overBudget(logical) {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		w.fail(logical, err, guards)
		return nil
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	id := DevIno{st.Dev, st.Ino}
	if up.onBranch(id) {
		// A bind mount of a directory above: walked already, on this
		// very branch.
		return nil
	}
	w.m.mu.Lock()
	d := w.t.dirs[id]
	isNew := d == nil
	moved := false
	if isNew {
		d = &Dir{g: w.g, id: id, path: logical, comps: comps, wd: -1}
		w.t.dirs[id] = d
		w.t.own(w.g)
	} else if d.g == w.g && d.path != logical && w.live {
		// Renamed within the covered tree: the same directory under a
		// new name, with the relations of its new place. Its inotify
		// watch reports the move next (IN_MOVE_SELF) and must keep it.
		if k := (RealKey{d.mnt, d.real}); w.t.dirsByReal[k] == d {
			delete(w.t.dirsByReal, k)
		}
		d.path, d.comps, d.rels, d.rehomed = logical, comps, nil, true
		moved = true
	}
	if !mergeRels(d, rels) && !isNew && !moved && !w.again {
		w.m.mu.Unlock()
		return nil
	}
	w.m.mu.Unlock()
	if moved {
		real, mnt := fsys.Path(fd), fsys.MountID(fd)
		w.m.mu.Lock()
		d.real, d.mnt = real, mnt
		if real != "" {
			w.t.dirsByReal[RealKey{d.mnt, real}] = d
		}
		w.m.mu.Unlock()
	}
	if isNew {
		real, mnt := fsys.Path(fd), fsys.MountID(fd)
		key := w.handleKey(fd, st.Dev)
		w.m.mu.Lock()
		d.real, d.mnt, d.handle = real, mnt, key
		if real != "" {
			w.t.dirsByReal[RealKey{d.mnt, real}] = d
		}
		if key != "" {
			w.t.dirsByHandle[key] = d
		}
		w.m.mu.Unlock()
	}
	if coversGuarded(d.rels) {
		// Before any file in it is marked: descriptors of its files
		// opened from now on are judged at their reads once the files
		// have their marks (deny.md §2).
		w.m.arm(fd, st.Dev)
	}
	var perm, notif fanotify.Mask
	for _, rr := range d.rels {
		if rr.rel.Covers() {
			notif = notifDirMask
			if rr.rule.WantsOpens() {
				perm = permDirMask
			}
		}
	}
	w.mark(fd, logical, &d.perm, perm, &d.notif, notif)
	if d.wd < 0 {
		wd, err := w.m.ino.AddFD(fd, inotifyDirMask)
		if err != nil {
			// Without a watch, new subdirectories are not covered.
			w.fail(logical, err, guards)
		} else {
			w.m.mu.Lock()
			d.wd = wd
			w.t.wds[wd] = d
			w.m.mu.Unlock()
		}
	}
	return &dirWork{up: up, id: id, d: d, logical: logical, comps: comps, rels: rels, fd: -1}
}

// mark adds the missing bits of the wanted masks to both groups.
func (w *walker) mark(fd int, what string, havePerm *fanotify.Mask, perm fanotify.Mask, haveNotif *fanotify.Mask, notif fanotify.Mask) {
	if add := perm &^ *havePerm; add != 0 {
		if err := w.m.perm.Add(fd, *havePerm|add); err != nil {
			w.fail(what, err, true)
		} else {
			w.m.mu.Lock()
			*havePerm |= add
			w.m.mu.Unlock()
		}
	}
	if add := notif &^ *haveNotif; add != 0 {
		if err := w.m.notif.Add(fd, *haveNotif|add); err != nil {
			w.fail(what, err, false)
		} else {
			w.m.mu.Lock()
			*haveNotif |= add
			w.m.mu.Unlock()
		}
	}
}

// children visits what the rules reach below the directory x (fd is
// its): by name when every rule spells the next component out, by
// reading it otherwise.
func (w *walker) children(fd int, x *dirWork) {
	logical, comps, rels := x.logical, x.comps, x.rels
	k := len(comps)
	var names []string
	needList := false
	for _, rr := range rels {
		switch {
		case rr.rel.Has(policy.RelPath) || rr.rel.Has(policy.RelUnder):
			needList = true
		case rr.rel.Has(policy.RelParent) || rr.rel.Has(policy.RelScaffold):
			if n, ok := rr.rule.LiteralAt(k); ok {
				names = append(names, n)
			} else {
				needList = true
			}
		}
	}
	ix := newRelIndex(rels, k)
	if !needList {
		seen := map[string]bool{}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				w.childOf(fd, x, n, unix.DT_UNKNOWN, ix.of(n))
			}
		}
		return
	}
	dfd, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		w.fail(logical, err, guarding(rels))
		return
	}
	f := os.NewFile(uintptr(dfd), logical)
	defer f.Close()
	for {
		ents, err := f.ReadDir(1024)
		for _, de := range ents {
			typ := uint8(unix.DT_UNKNOWN)
			switch {
			case de.Type().IsDir():
				typ = unix.DT_DIR
			case de.Type()&os.ModeSymlink != 0:
				typ = unix.DT_LNK
			case de.Type().IsRegular():
				typ = unix.DT_REG
			}
			w.childOf(fd, x, de.Name(), typ, ix.of(de.Name()))
		}
		if err != nil || len(ents) == 0 {
			break
		}
	}
}

// child handles one entry of the directory up (parentFD is its).
func (w *walker) child(parentFD int, up *dirWork, name string, typ uint8) {
	w.childOf(parentFD, up, name, typ, up.rels)
}

// childOf is child with the pairs of up that may relate to name (all of
// them, or those relIndex.of gives).
func (w *walker) childOf(parentFD int, up *dirWork, name string, typ uint8, rels []ruleRel) {
	logical, comps := up.logical, up.comps
	var sub []ruleRel
	followLink := false
	for _, rr := range rels {
		if rel := rr.rule.ChildRelation(comps, rr.rel, name); rel != 0 {
			sub = append(sub, ruleRel{rr.rule, rel})
			if lit, ok := rr.rule.LiteralAt(len(comps)); ok && lit == name {
				followLink = true
			}
		}
	}
	var covering []Rule
	for _, rr := range rels {
		if rr.rel.Covers() && rr.rule.MatchName(rr.rel, name) {
			covering = appendRule(covering, rr.rule)
			if lit, ok := rr.rule.LastLiteral(); ok && lit == name && rr.rel.Has(policy.RelParent) {
				followLink = true
			}
		}
	}
	if len(sub) == 0 && len(covering) == 0 {
		return
	}
	p := join(logical, name)
	var fd int
	var err error
	var st unix.Stat_t
	opened := false
	if typ == unix.DT_UNKNOWN {
		// Opened (O_PATH, not following a link) and fstat'ed at once: a
		// file looked up by name costs two syscalls, not an lstat more
		// (a filter per file meant 100,000 of them at start).
		fd0, err := unix.Openat(parentFD, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return
		}
		if err := unix.Fstat(fd0, &st); err != nil {
			unix.Close(fd0)
			return
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			typ = unix.DT_DIR
		case unix.S_IFLNK:
			typ = unix.DT_LNK
		case unix.S_IFREG:
			typ = unix.DT_REG
		}
		switch {
		case typ == unix.DT_LNK:
			unix.Close(fd0) // the link itself: followed below, or not at all
		case typ == unix.DT_DIR && len(sub) == 0, typ == unix.DT_REG && len(covering) == 0:
			unix.Close(fd0)
			return
		default:
			fd, opened = fd0, true
		}
	}
	if !opened {
		switch typ {
		case unix.DT_DIR:
			if len(sub) == 0 {
				return
			}
			fd, err = unix.Openat(parentFD, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_DIRECTORY, 0)
		case unix.DT_REG:
			if len(covering) == 0 {
				return
			}
			fd, err = unix.Openat(parentFD, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		case unix.DT_LNK:
			// A symlink is followed only where the configuration spells the
			// name out and root owns the link: otherwise anyone who may
			// create a link in a covered directory (a user's ~/.ssh) could
			// point a block filter at any file of the machine. Followed, it
			// is resolved in the root, so it cannot lead out of it.
			if !followLink || !ownedByRoot(parentFD, name) {
				return
			}
			if fd, err = w.openIn(p, 0, 0); err == nil {
				// What the link leads to is reported under the name the
				// file system gives it (/usr/bin/... on a merged-/usr
				// system for a filter written /bin), not the alias.
				if real := fsys.Path(fd); real != "" {
					p = w.g.Inside(real)
				}
			}
		default:
			fd, err = unix.Openat(parentFD, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
	}
	guards := guarding(sub) || guardingRules(covering)
	if err != nil {
		if !errors.Is(err, unix.ENOENT) {
			w.fail(p, err, guards)
		}
		return
	}
	defer unix.Close(fd)
	if !opened {
		if err := unix.Fstat(fd, &st); err != nil {
			w.fail(p, err, guards)
			return
		}
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if len(sub) > 0 && (typ == unix.DT_DIR || followLink) {
			if x := w.visitDir(fd, up, p, append(comps[:len(comps):len(comps)], name), sub); x != nil {
				x.name = name
				switch {
				case typ == unix.DT_LNK:
					x.how = byPath
				case x.d.handle != "" && w.handlesOpen(x.id.Dev, x.d.handle):
					x.how = byHandle
				default:
					x.how = byName
				}
				w.push(x)
			}
		}
		return
	}
	if len(covering) > 0 {
		w.markFile(fd, &st, p, covering)
	}
}

// ownedByRoot reports whether the symlink name in dir belongs to root.
func ownedByRoot(dirFD int, name string) bool {
	var st unix.Stat_t
	return unix.Fstatat(dirFD, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Uid == 0
}

// markFile records and marks a covered file.
func (w *walker) markFile(fd int, st *unix.Stat_t, p string, rules []Rule) {
	if !guardingRules(rules) && w.full(p) || w.overBudget(p) {
		return
	}
	id := DevIno{st.Dev, st.Ino}
	// The handle holds the inode's generation: an entry for the same
	// inode number with another handle is a file that is gone, whose
	// number was reused, and its marks went with it.
	key := w.handleKey(fd, st.Dev)
	w.m.mu.Lock()
	f := w.t.files[id]
	if f == nil || f.handle != key {
		if f != nil && w.t.filesByHandle[f.handle] == f {
			delete(w.t.filesByHandle, f.handle)
		}
		if f == nil {
			w.t.own(w.g)
		}
		f = &fileEntry{g: w.g, id: id, path: p, handle: key}
		w.t.files[id] = f
		if key != "" {
			w.t.filesByHandle[key] = f
		}
	}
	for _, r := range rules {
		f.rules = appendRule(f.rules, r)
	}
	w.m.mu.Unlock()
	var perm fanotify.Mask
	for _, r := range f.rules {
		if r.WantsOpens() {
			perm = permFileMask
		}
	}
	w.m.mu.RLock()
	guard := guardingContent(f.rules) && f.guard == fanotify.GuardNone
	had := f.perm
	w.m.mu.RUnlock()
	if guard {
		// Armed first: a descriptor opened from here on is judged from
		// the mark on (its directory's visit armed the file system
		// already, unless a configured symlink led elsewhere).
		w.m.arm(fd, st.Dev)
		gd, err := w.m.markGuarded(fd, st.Dev, perm, p)
		if err != nil {
			w.fail(p, err, true)
		} else {
			w.m.mu.Lock()
			f.perm |= perm | gd.Mask()
			f.guard = gd
			w.m.mu.Unlock()
		}
	}
	w.mark(fd, p, &f.perm, perm, &f.notif, notifFileMask)
	if perm != 0 && had&perm != perm {
		// A pass given to the file while no rule asked about it (the
		// neighbour of a protected file, renamed or linked under a
		// covered name since, or covered by a reload) would win over
		// its own mark.
		if err := w.m.unpass(fd, p); err != nil {
			w.fail(p, err, true)
		}
	}
}
