package engine

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/inotify"
)

func (e *Engine) forgetFile(key []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	f := e.tables.filesByHandle[string(key)]
	if f == nil {
		return
	}
	delete(e.tables.filesByHandle, f.handle)
	if e.tables.files[f.id] == f {
		delete(e.tables.files, f.id)
	}
}

// resolveFID finds the path of a directory fid the tables do not know.
func (e *Engine) resolveFID(f fanotify.FID) string {
	if !f.Valid() {
		return ""
	}
	e.mu.RLock()
	mfd, ok := e.mountFDs[f.FSID]
	e.mu.RUnlock()
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

// inotifyLoop keeps the tables in step with the tree.
func (e *Engine) inotifyLoop() error {
	buf := make([]byte, 64<<10)
	return e.readLoop("inotify", e.ino.File(), e.ino.Read, buf, func(b []byte) {
		overflow := false
		perr := inotify.Parse(b, func(ev *inotify.Event) {
			if ev.Mask.Has(inotify.QOverflow) {
				overflow = true
				return
			}
			e.treeEvent(ev)
		})
		if perr != nil {
			e.log.Warn("malformed inotify batch", "err", perr)
		}
		if overflow {
			// Some creations were missed: walk again, which adds what is
			// missing and keeps what is there.
			e.overflowIno.Add(1)
			e.log.Warn("inotify queue overflowed; walking the tree again (raise fs.inotify.max_queued_events)")
			e.rewalk()
		}
	})
}

func (e *Engine) treeEvent(ev *inotify.Event) {
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	e.mu.RLock()
	d := e.tables.wds[ev.WD]
	e.mu.RUnlock()
	if d == nil {
		return
	}
	switch {
	case ev.Mask.Has(inotify.MoveSelf) && d.rehomed:
		e.mu.Lock()
		d.rehomed = false
		e.mu.Unlock()
	case ev.Mask.Any(inotify.Ignored | inotify.DeleteSelf | inotify.MoveSelf):
		// The directory is gone or elsewhere: its name no longer leads
		// to it. Files in it keep their own marks.
		e.dropDir(d, ev.Mask.Has(inotify.Ignored))
	case ev.Mask.Any(inotify.Create | inotify.MovedTo):
		name := string(ev.Name)
		if name == "" {
			return
		}
		typ := uint8(unix.DT_UNKNOWN)
		if ev.Mask.Has(inotify.IsDir) {
			typ = unix.DT_DIR
		} else if !e.wantsInodeMark(d, name) {
			// Covered by the directory's marks already: a file that only
			// monitor filters cover is reported through its directory,
			// so a burst of new files costs no syscall here.
			return
		}
		w := e.newWalker(e.tables, d.g)
		w.live = true
		pfd, err := w.openIn(d.path, unix.O_DIRECTORY, 0)
		if err != nil {
			return
		}
		defer unix.Close(pfd)
		var st unix.Stat_t
		if unix.Fstat(pfd, &st) != nil || (devIno{st.Dev, st.Ino}) != d.id {
			return
		}
		w.child(pfd, d.path, d.comps, name, typ, d.rels, len(d.comps))
	}
}

// wantsInodeMark reports whether a new file called name in d needs marks
// of its own: when a rule that answers opens covers it, so that the
// protection follows the file through links and renames.
func (e *Engine) wantsInodeMark(d *dirEntry, name string) bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, rr := range d.rels {
		if rr.rel.Covers() && rr.rule.WantsOpens() && rr.rule.MatchName(rr.rel, name) {
			return true
		}
	}
	return false
}

// dropDir forgets a directory and removes its marks and watch.
func (e *Engine) dropDir(d *dirEntry, watchGone bool) {
	e.mu.Lock()
	delete(e.tables.dirs, d.id)
	if k := (realKey{d.mnt, d.real}); e.tables.dirsByReal[k] == d {
		delete(e.tables.dirsByReal, k)
	}
	// The handle stays for a while: the notification loop may still hold
	// events of the directory's last moments (rm -r deletes the files,
	// then the directory, and inotify may report the directory gone
	// before those deletes are read). Its generation keeps it from
	// naming another directory; sweepGone forgets it later.
	d.goneAt = time.Now()
	delete(e.tables.wds, d.wd)
	e.mu.Unlock()
	if !watchGone && d.wd >= 0 {
		e.ino.Remove(d.wd)
	}
	e.unmark(d.handle, d.perm, d.notif)
}

// goneFor is how long the handle of a gone directory is kept.
const goneFor = 10 * time.Second

// sweepGone forgets the handles of directories gone for goneFor.
func (e *Engine) sweepGone(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, d := range e.tables.dirsByHandle {
		if !d.goneAt.IsZero() && now.Sub(d.goneAt) > goneFor {
			delete(e.tables.dirsByHandle, k)
		}
	}
}

// openKey opens (O_PATH) the object a fid key names. ok is false when
// the key or its file system is unknown; err is ESTALE when the object
// is gone.
func (e *Engine) openKey(key string) (fd int, ok bool, err error) {
	if len(key) < 12 {
		return -1, false, nil
	}
	var f fanotify.FID
	copy(f.FSID[:], key[:8])
	f.HandleType = int32(uint32(key[8]) | uint32(key[9])<<8 | uint32(key[10])<<16 | uint32(key[11])<<24)
	f.Handle = []byte(key[12:])
	e.mu.RLock()
	mfd, ok := e.mountFDs[f.FSID]
	e.mu.RUnlock()
	if !ok {
		return -1, false, nil
	}
	fd, err = fanotify.OpenHandle(mfd.fd, f)
	return fd, true, err
}

// unmark removes mask bits from the object a fid key names.
func (e *Engine) unmark(key string, perm, notif fanotify.Mask) {
	if perm == 0 && notif == 0 {
		return
	}
	fd, ok, err := e.openKey(key)
	if !ok || err != nil {
		return // unknown, or gone: so are its marks
	}
	defer unix.Close(fd)
	if perm != 0 {
		e.perm.Remove(fd, perm)
	}
	if notif != 0 {
		e.notif.Remove(fd, notif)
	}
}
