package engine

import (
	"runtime/debug"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/inotify"
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
					var kb [160]byte
					e.forgetFile(keyBuf(kb[:0], ev.File))
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

// keyBuf builds a fid key without allocating; map lookups with
// string(keyBuf) do not allocate either.
func keyBuf(buf []byte, f fanotify.FID) []byte {
	buf = append(buf[:0], f.FSID[:]...)
	t := f.HandleType
	buf = append(buf, byte(t), byte(t>>8), byte(t>>16), byte(t>>24))
	return append(buf, f.Handle...)
}

func (e *Engine) notifyEvent(ev *fanotify.Event, now time.Time, rules []grule) []grule {
	var kb [160]byte
	if ev.Mask.Any(fanotify.DeleteSelf) && ev.File.Valid() {
		// The last link is gone and the inode freed: forget it, so a
		// file that gets its number later does not inherit its rules.
		// The unlink itself was reported by the directory's event.
		e.forgetFile(keyBuf(kb[:0], ev.File))
		return rules
	}
	var p string
	// A view for the lookups; join copies it into the reported path.
	name := unsafeString(ev.Name)
	e.mu.RLock()
	var dir *dirEntry
	if ev.Dir.Valid() {
		dir = e.tables.dirsByHandle[string(keyBuf(kb[:0], ev.Dir))]
	}
	if dir != nil && name != "" {
		rules = dir.covers(name, rules)
		p = join(dir.path, name)
	}
	var file *fileEntry
	if len(rules) == 0 && ev.File.Valid() {
		// Not through a directory we mark: a covered file reached by
		// another link.
		if file = e.tables.filesByHandle[string(keyBuf(kb[:0], ev.File))]; file != nil {
			rules = append(rules, file.rules...)
		}
	}
	e.mu.RUnlock()
	if len(rules) == 0 {
		return rules
	}
	if file != nil {
		// Reached through a link elsewhere, or an event of the inode
		// alone (a link count change): where is it now? The path noted
		// when it was marked may be stale (a parent renamed since).
		p = file.path
		if dp := e.resolveFID(ev.Dir); dp != "" && name != "" {
			p = file.g.inside(join(dp, name))
		} else if fp := e.resolveFID(ev.File); fp != "" {
			p = file.g.inside(fp)
		}
	}
	rule := pickRule(rules)
	// The file's group: the process may be gone before it can be asked.
	proc := e.processOf(rule.g, ev.PID, now)
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
			Container: rule.g.container(),
			Count:     1,
		}
		e.enqueue(&out)
	}
	return rules
}

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
	return readlinkFD(fd)
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
