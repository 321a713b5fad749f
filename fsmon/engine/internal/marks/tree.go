package marks

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/inotify"
)

// resolveFID finds the path of a directory fid the tables do not know.
func (m *Marks) resolveFID(f fanotify.FID) string {
	if !f.Valid() {
		return ""
	}
	m.mu.RLock()
	mfd, ok := m.mountFDs[f.FSID]
	m.mu.RUnlock()
	if !ok {
		return ""
	}
	fd, err := fanotify.OpenHandle(mfd.fd, f)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	return fsys.Path(fd)
}

// TreeEvent keeps the tables in step with the tree: an inotify event
// of a watched directory.
func (m *Marks) TreeEvent(ev *inotify.Event) {
	p := m.Place()
	defer p.Done()
	m.mu.RLock()
	d := m.tables.wds[ev.WD]
	m.mu.RUnlock()
	if d == nil {
		return
	}
	switch {
	case ev.Mask.Has(inotify.MoveSelf) && d.rehomed:
		m.mu.Lock()
		d.rehomed = false
		m.mu.Unlock()
	case ev.Mask.Any(inotify.Ignored | inotify.DeleteSelf | inotify.MoveSelf):
		// The directory is gone or elsewhere: its name no longer leads
		// to it. Files in it keep their own marks.
		m.dropDir(d, ev.Mask.Has(inotify.Ignored))
	case ev.Mask.Any(inotify.Create | inotify.MovedTo):
		name := string(ev.Name)
		if name == "" {
			return
		}
		typ := uint8(unix.DT_UNKNOWN)
		if ev.Mask.Has(inotify.IsDir) {
			typ = unix.DT_DIR
		} else if !m.wantsInodeMark(d, name) {
			// Covered by the directory's marks already: a file that only
			// monitor filters cover is reported through its directory,
			// so a burst of new files costs no syscall here.
			return
		}
		w := m.newWalker(m.tables, d.g)
		w.live = true
		pfd, err := w.openDir(d)
		if err != nil {
			return
		}
		var st unix.Stat_t
		if unix.Fstat(pfd, &st) != nil || (DevIno{st.Dev, st.Ino}) != d.id {
			unix.Close(pfd)
			return
		}
		x := &dirWork{id: d.id, d: d, logical: d.path, comps: d.comps, rels: d.rels, fd: -1}
		w.child(pfd, x, name, typ)
		w.settle(x, pfd)
		w.drain()
	}
}

// openDir opens (O_PATH) a directory of the tables, for a tree event in
// it. Never by its path alone where that can be helped: beyond PATH_MAX
// (4096 bytes) no path resolves. By its handle; where handles do not
// open, one component at a time from the root; by its path in the root
// only when neither works (a directory reached through a configured
// symlink, whose component is the link).
func (w *walker) openDir(d *Dir) (int, error) {
	if fd, ok, err := w.m.openKey(d.handle); ok && err == nil {
		return fd, nil
	}
	if fd, err := w.openComps(d.comps); err == nil {
		return fd, nil
	}
	return w.openIn(d.path, unix.O_DIRECTORY, 0)
}

// openComps opens the directory the names comps lead to from the root,
// one openat a component, following no symlink (the names are the
// walk's, so none is "..").
func (w *walker) openComps(comps []string) (int, error) {
	fd, err := unix.Openat(w.rootFD, ".", unix.O_PATH|unix.O_CLOEXEC|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, err
	}
	for _, c := range comps {
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_DIRECTORY, 0)
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// wantsInodeMark reports whether a new file called name in d needs marks
// of its own: when a rule that answers opens covers it, so that the
// protection follows the file through links and renames.
func (m *Marks) wantsInodeMark(d *Dir, name string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, rr := range d.rels {
		if rr.rel.Covers() && rr.rule.WantsOpens() && rr.rule.MatchName(rr.rel, name) {
			return true
		}
	}
	return false
}

// dropDir forgets a directory and removes its marks and watch.
func (m *Marks) dropDir(d *Dir, watchGone bool) {
	m.mu.Lock()
	if m.tables.dirs[d.id] == d {
		delete(m.tables.dirs, d.id)
		m.tables.disown(d.g)
	}
	if k := (RealKey{d.mnt, d.real}); m.tables.dirsByReal[k] == d {
		delete(m.tables.dirsByReal, k)
	}
	// The handle stays for a while: the notification loop may still hold
	// events of the directory's last moments (rm -r deletes the files,
	// then the directory, and inotify may report the directory gone
	// before those deletes are read). Its generation keeps it from
	// naming another directory; sweepGone forgets it later.
	d.goneAt = time.Now()
	delete(m.tables.wds, d.wd)
	m.mu.Unlock()
	if !watchGone && d.wd >= 0 {
		m.ino.Remove(d.wd)
	}
	m.unmark(d.handle, d.perm, d.notif)
}

// goneFor is how long the handle of a gone directory is kept.
const goneFor = 10 * time.Second

// SweepGone forgets the handles of directories gone for goneFor.
func (m *Marks) SweepGone(now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, d := range m.tables.dirsByHandle {
		if !d.goneAt.IsZero() && now.Sub(d.goneAt) > goneFor {
			delete(m.tables.dirsByHandle, k)
		}
	}
}

// openKey opens (O_PATH) the object a fid key names. ok is false when
// the key or its file system is unknown; err is ESTALE when the object
// is gone.
func (m *Marks) openKey(key string) (fd int, ok bool, err error) {
	if len(key) < 12 {
		return -1, false, nil
	}
	var f fanotify.FID
	copy(f.FSID[:], key[:8])
	f.HandleType = int32(uint32(key[8]) | uint32(key[9])<<8 | uint32(key[10])<<16 | uint32(key[11])<<24)
	f.Handle = []byte(key[12:])
	m.mu.RLock()
	mfd, ok := m.mountFDs[f.FSID]
	m.mu.RUnlock()
	if !ok {
		return -1, false, nil
	}
	fd, err = fanotify.OpenHandle(mfd.fd, f)
	return fd, true, err
}

// unmark removes mask bits from the object a fid key names.
func (m *Marks) unmark(key string, perm, notif fanotify.Mask) {
	if perm == 0 && notif == 0 {
		return
	}
	fd, ok, err := m.openKey(key)
	if !ok || err != nil {
		return // unknown, or gone: so are its marks
	}
	defer unix.Close(fd)
	if perm != 0 {
		m.perm.Remove(fd, perm)
	}
	if notif != 0 {
		m.notif.Remove(fd, notif)
	}
}
