package marks

import (
	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
)

// Adopt gives a file that was covered by its directory de only (a file
// new in a marked directory) marks of its own, through the permission
// event's fd (st its fstat, name its name in de), and its table entry.
//
// It runs on the permission loop BEFORE the opener's answer is written
// (docs/design/deny.md §2): the creator gets its descriptor only after
// the mark, so every byte it writes is written to a marked inode, and a
// process that links the new name elsewhere meets the inode's own mark
// at its open from then on. It therefore never waits for the placement
// lock (a reload's walk may hold it for seconds): the mark syscalls are
// thread-safe, and only the tables' lock is taken, for map work. The tree
// event for the file's creation, which comes later under the placement
// lock, finds the entry and its masks and has nothing left to do.
//
// If a reload swaps the tables between the look-up and the insert, the
// entry lands in the set in force at the insert; the new walk or the tree
// event places it in the new set as for any file.
func (m *Marks) Adopt(fd int, de *Dir, name string, st *unix.Stat_t) {
	m.mu.RLock()
	rules := de.covers(name, nil)
	dirHandle, dirDev, g, p := de.handle, de.id.Dev, de.g, join(de.path, name)
	m.mu.RUnlock()
	if !guardingRules(rules) {
		// Only monitor filters: the directory's marks report it.
		return
	}
	// The file's handle key. Its file system is its directory's, whose
	// key starts with the fsid: no fstatfs (which asks the server on
	// NFS) before the answer.
	key := ""
	if typ, h, err := fanotify.Handle(fd); err == nil {
		var fsid [8]byte
		if st.Dev == dirDev && len(dirHandle) >= len(fsid) {
			copy(fsid[:], dirHandle)
		} else if fsid, err = fanotify.Fsid(fd); err != nil {
			return
		}
		key = fidKey(fsid, typ, h)
	}
	perm := permFileMask
	var placedPerm, placedNotif fanotify.Mask
	var err error
	gd := fanotify.GuardNone
	if guardingContent(rules) {
		// With its content guard: the creator's descriptor, and any
		// opened since its directory's file system was armed, are
		// judged at each read and write from here on.
		if gd, err = m.markGuarded(fd, st.Dev, perm, p); err == nil {
			perm |= gd.Mask()
		}
	} else {
		err = m.perm.Add(fd, perm)
	}
	if err != nil {
		// The tree event for its creation tries again, and counts a
		// failure.
		m.log.Debug("marking a new file before its answer", "path", p, "err", err)
	} else {
		placedPerm = perm
	}
	if err := m.notif.Add(fd, notifFileMask); err == nil {
		placedNotif = notifFileMask
	}
	if f := m.adoptHook.Load(); f != nil {
		(*f)()
	}
	id := DevIno{st.Dev, st.Ino}
	entry := &fileEntry{g: g, id: id, path: p, rules: rules, handle: key, perm: placedPerm, notif: placedNotif, guard: gd}
	if m.insertAdopted(de, name, entry) {
		return
	}
	// A container's group that ended since the look-up above took its
	// rules out of de (DropGroup does not wait for this loop, which never
	// takes the placement lock): an entry made with them would belong to
	// no group and never go. The marks go instead.
	if placedPerm != 0 {
		m.perm.Remove(fd, placedPerm)
	}
	if placedNotif != 0 {
		m.notif.Remove(fd, placedNotif)
	}
}

// insertAdopted makes f the table entry of an adopted file called name
// in de, with the rules de has for it now, under the write lock: a group
// that ends after this finds the entry in its own pass over the tables.
// It reports false, and inserts nothing, when no rule that answers opens
// covers the name any more.
func (m *Marks) insertAdopted(de *Dir, name string, f *fileEntry) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	// A pass decided before this entry must not stay (neighbour.go).
	m.seq.Add(2)
	// The rules of the look-up, again: de's may have changed since.
	f.rules, f.g = de.covers(name, nil), de.g
	if !guardingRules(f.rules) {
		return false
	}
	t := m.tables
	old := t.files[f.id]
	if old != nil && old.handle == f.handle {
		// A walk or the tree event has it (and places its marks, with
		// rules of every directory it is reached from): their entry is
		// theirs to change, and they read it outside the lock.
		return true
	}
	// New, or an entry of a freed inode whose number was reused.
	if old != nil && t.filesByHandle[old.handle] == old {
		delete(t.filesByHandle, old.handle)
	}
	if old == nil {
		t.own(f.g)
	}
	t.files[f.id] = f
	if f.handle != "" {
		t.filesByHandle[f.handle] = f
	}
	return true
}
