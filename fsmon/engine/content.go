package engine

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
)

// Content events (docs/design/deny.md §3, docs/content-ops.md). A file
// that a protect-mode block filter covers has FAN_PRE_ACCESS in its
// inode mark (FAN_ACCESS_PERM where the file system has no pre-content
// events): the kernel asks before every read, write, mmap and truncate
// of it, through any descriptor opened after its mark or after its file
// system was armed, and whoever holds that descriptor: a thief who took
// it with pidfd_getfd(2) is the process that asks. The open was judged
// already; a content event judges the process doing the read or write
// with the same rules.
//
// One event per read(2) or write(2) call: an allowed reader must pay
// one look-up, not a decision, per call, and a reader that is reported
// must not be reported per call. So, per reader (the loop's, each
// stand-in's), a bounded set of the (pid, exec generation, inode) that
// were allowed, and one of those reported. The exec generation is the
// count of the pid's slot in the exec counter (execgen), which moves at
// every exec, exit and rename: a verdict is for one run of one program
// under one name. Without the counter nothing is cached (a process may
// exec another program and keep the descriptor), and reports are told
// once per (pid, executable, inode). Both sets are cleared when the
// policy changes (allowGen: a reload, a container gone) and when full.
// A file gone for good (its inode freed, FAN_DELETE_SELF) clears them
// too: a file that gets its inode number is another file. Only allows
// are cached: a denied reader is judged again at each call,
// so that an allow entry resolving to its binary later lets it read.

// contentEvents are the events about a file's content, not its open.
const contentEvents = fanotify.PreAccess | fanotify.AccessPerm

// contentCacheMax bounds each set of a contentCache.
const contentCacheMax = 4096

// contentKey is one program run (pid and its slot's exec count, or
// without the counter its executable) and one file.
type contentKey struct {
	pid int32
	gen uint64
	id  devIno
	exe devIno
}

// contentCache is one reader's memory of content events.
type contentCache struct {
	gen      uint64 // the engine's contentGen the sets are of
	allowed  map[contentKey]struct{}
	reported map[contentKey]struct{}
}

// sync empties the sets if the policy changed since they were filled.
func (c *contentCache) sync(gen uint64) {
	if c.allowed == nil {
		c.allowed = make(map[contentKey]struct{}, 256)
		c.reported = make(map[contentKey]struct{}, 256)
	}
	if c.gen != gen {
		clear(c.allowed)
		clear(c.reported)
		c.gen = gen
	}
}

// once reports whether k is not in set, and adds it.
func once(set map[contentKey]struct{}, k contentKey) bool {
	if _, ok := set[k]; ok {
		return false
	}
	if len(set) >= contentCacheMax {
		clear(set)
	}
	set[k] = struct{}{}
	return true
}

// contentGen moves whenever what a remembered verdict was of may have
// changed: the policy (allowGen) or a file gone (its number may come
// back as another file's).
func (e *Engine) contentGen() uint64 { return e.allowGen.Load() + e.filesGone.Load() }

// contentCacheOf is the content cache of d's reader.
func (e *Engine) contentCacheOf(d *decision) *contentCache {
	if d.content != nil {
		return d.content
	}
	return &e.content
}

// judgeContent is phase 1 of a content event: true when an allow of
// the same program run and file is remembered (the answer is allow, and
// there is nothing to report); else the decision is judged as an open
// is, and d.ck names it.
func (e *Engine) judgeContent(s *permSlot, d *decision) bool {
	cc := e.contentCacheOf(d)
	cc.sync(e.contentGen())
	d.ck = contentKey{pid: s.pid}
	var st unix.Stat_t
	if _, _, errno := unix.RawSyscall(unix.SYS_FSTAT, uintptr(s.fd), uintptr(unsafe.Pointer(&st)), 0); errno == 0 {
		d.ck.id = devIno{st.Dev, st.Ino}
		if d.cached {
			d.ck.gen = e.exes.SlotGen(s.pid)
			if _, ok := cc.allowed[d.ck]; ok {
				d.reset(s.pid)
				e.contentHits.Add(1)
				return true
			}
		}
	}
	e.judge(s, d)
	if d.kind == 0 {
		if d.cached {
			once(cc.allowed, d.ck)
		}
		return false
	}
	if !d.cached {
		d.ck.exe = devIno(e.who.ExeID(&d.who))
	}
	if d.id != (devIno{}) && devIno(e.who.ExeID(&d.who)) == d.id {
		// The process runs the file itself: a program mapping its own
		// segments (4 events per exec, measured) after its exec was
		// judged at FAN_OPEN_EXEC_PERM. Denied, it would die past the
		// point of no return.
		d.kind = 0
		if d.cached {
			once(cc.allowed, d.ck)
		}
	}
	return false
}

// reportContent says whether the content event d judged is to be
// reported: once per program run and file. A verdict that allows is
// remembered, so that the run's next calls cost one look-up.
func (e *Engine) reportContent(d *decision) bool {
	if d.kind == 0 {
		return false
	}
	cc := e.contentCacheOf(d)
	if d.kind != fsmon.KindDenied && d.cached {
		once(cc.allowed, d.ck)
	}
	return once(cc.reported, d.ck)
}

// foldOpen notes a reported open of a file whose content is guarded, so
// that the opener's reads and writes through that descriptor fold into
// the open's report instead of one more.
func (e *Engine) foldOpen(s *permSlot, d *decision) {
	guarded := false
	for _, r := range d.rules {
		if r.Blocks() && r.Mode == fsmon.ModeProtect {
			guarded = true
			break
		}
	}
	if !guarded {
		return
	}
	k := contentKey{pid: s.pid, id: d.id}
	if d.cached {
		k.gen = e.exes.SlotGen(s.pid)
	} else {
		k.exe = devIno(e.who.ExeID(&d.who))
	}
	cc := e.contentCacheOf(d)
	cc.sync(e.contentGen())
	once(cc.reported, k)
}

// opOf is the op of a permission event (docs/content-ops.md): the
// kernel's pre-content event is the same for a read, a write, an mmap
// and most truncates, and its range is page-aligned for all of them;
// only a range of no bytes (a truncate to a page boundary, 0 included)
// and the legacy read event tell more.
func opOf(ev *fanotify.Event) fsmon.Op {
	switch {
	case ev.Mask.Any(fanotify.OpenExecPerm):
		return fsmon.OpExec
	case ev.Mask.Any(fanotify.AccessPerm):
		return fsmon.OpRead
	case ev.Mask.Any(fanotify.PreAccess):
		if ev.HasRange && ev.Range.Count == 0 {
			return fsmon.OpTruncate
		}
		return fsmon.OpAccess
	}
	return fsmon.OpOpen
}
