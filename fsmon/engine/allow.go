package engine

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/allowstate"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
)

// allowIDs caches what the executables that allow lists name resolve to,
// per group: the entry /usr/sbin/nginx of a container profile is that
// container's nginx. It belongs to the permission loop alone; a reload
// or a container that goes clears it.
//
// An entry allows its current resolution and any former one that is
// still alive (docs/design/deny.md §6): a package upgrade renames a new
// binary over the old one, and the processes that run the old one must
// keep their access until they exit, while the new one is allowed from
// its first open. A resolution is an identity (device, inode) and the
// file handle of that inode: the handle holds the inode's generation, so
// it tells the file apart from a later one that got its number (ext4
// gives a freed inode number out again at once), and open_by_handle_at
// says when it is gone (ESTALE).
//
// Entries are looked up again:
//   - at once, on a miss by a process whose /proc/PID/exe reads as the
//     entry's path (or the file it resolved to): the new binary of an
//     upgrade. Once per (pid, executable), so a process cannot make the
//     loop walk the entries at every open;
//   - on any other miss, at most every allowRecheck: a process outside
//     the list, opening in a loop, would otherwise pay for a walk of
//     every entry at each open.
type allowIDs struct {
	gen uint64
	m   map[allowKey]*allowEntry
	// tried are the (pid, executable) pairs that made an immediate
	// look-up.
	tried map[triedKey]struct{}
	swept int64 // unix nanoseconds of the last sweep of former resolutions

	// store, on the permission loop's own cache only, is where the
	// host's entries are kept across restarts (allowstate); nil for the
	// stand-ins' and the scanner's copies, and without --state.dir.
	store *allowstate.Writer

	// fakeNow, set by tests, stands in for the clock (unix nanoseconds)
	// when not zero, so that a test can step past allowRecheck.
	fakeNow atomic.Int64
}

type allowKey struct {
	g    *group
	path string
}

type triedKey struct {
	pid int32
	id  devIno
}

// allowEntry is what one entry resolved to.
type allowEntry struct {
	cur    resolution
	at     int64  // unix nanoseconds of the look-up
	real   string // the file the path resolved to, in the group's root
	former []resolution
}

// resolution is one inode an entry named.
type resolution struct {
	id     devIno
	handle proc.Handle // zero where the file system gives none
}

const (
	allowRecheck = 100 * time.Millisecond
	// maxFormer bounds the former resolutions kept per entry (upgrades
	// while processes of the older ones still run).
	maxFormer = 8
	// allowSweep is how often former resolutions are checked for being
	// gone.
	allowSweep = 10 * time.Second
	maxTried   = 4096
	// maxKept bounds the entries a new generation keeps.
	maxKept = 65536
)

// newGeneration starts a generation of the cache: after a reload, or
// when a container's group is gone. What the entries of groups that
// still exist resolved to is kept, former resolutions included: they are
// the only record of the previous build of an upgraded program, whose
// processes must stay allowed across a reload or another container's
// end until they exit. Each kept entry is looked up again at its next
// miss; the groups of containers that are gone are dropped.
func (a *allowIDs) newGeneration(e *Engine, gen uint64) {
	old := a.m
	a.m, a.gen = make(map[allowKey]*allowEntry, len(old)), gen
	a.tried = map[triedKey]struct{}{}
	if len(old) == 0 {
		return
	}
	live := e.liveGroups()
	for k, x := range old {
		if _, ok := live[k.g]; ok && len(a.m) < maxKept {
			x.at = 0
			a.m[k] = x
		}
	}
}

// has reports whether the executable id that the opener of d runs is
// one that paths, entries in g's root, name now or named before and
// still runs.
func (a *allowIDs) has(e *Engine, g *group, paths []string, id devIno, d *decision) bool {
	o := opener{e, d}
	if gen := e.allowGen.Load(); a.m == nil || a.gen != gen {
		a.newGeneration(e, gen)
	}
	now := a.fakeNow.Load()
	if now == 0 {
		now = time.Now().UnixNano()
	}
	if now-a.swept >= int64(allowSweep) {
		a.sweep(e)
		a.swept = now
	}
	stale := false
	for _, p := range paths {
		x := a.m[allowKey{g, p}]
		if x == nil {
			stale = true
			continue
		}
		if x.matches(id, o) {
			return true
		}
		if now-x.at >= int64(allowRecheck) {
			stale = true
		}
	}
	// The new binary of an upgrade: the process runs what the entry's
	// path names now.
	if t := (triedKey{o.pid(), id}); !a.triedBefore(t) {
		exe := g.Inside(o.exePath())
		for _, p := range paths {
			x := a.m[allowKey{g, p}]
			if exe == "" || x == nil || exe != p && exe != x.real {
				continue
			}
			a.tried[t] = struct{}{}
			a.refresh(e, g, p, now)
			if a.m[allowKey{g, p}].matches(id, o) {
				return true
			}
		}
	}
	if !stale {
		return false
	}
	// Not a known one: the entries may have been replaced since.
	found := false
	for _, p := range paths {
		if a.refresh(e, g, p, now).matches(id, o) {
			found = true
		}
	}
	return found
}

// opener reads, when asked, what allowIDs needs of the process that
// opens beyond its executable's identity.
type opener struct {
	e *Engine
	d *decision
}

func (o opener) pid() int32             { return o.d.who.PID }
func (o opener) exeHandle() proc.Handle { return o.e.who.ExeHandle(&o.d.who) }
func (o opener) exePath() string        { return o.e.who.ExePath(&o.d.who, &o.d.bufs) }

func (a *allowIDs) triedBefore(t triedKey) bool {
	if _, ok := a.tried[t]; ok {
		return true
	}
	if len(a.tried) >= maxTried {
		clear(a.tried)
	}
	return false
}

// matches reports whether the process o, running id, runs the entry's
// current or a former resolution. Where a handle was recorded, the
// process's executable must have that handle: the same inode, not one
// that got its number later.
func (x *allowEntry) matches(id devIno, o opener) bool {
	if x == nil || id == (devIno{}) {
		return false
	}
	if x.cur.id == id && (x.cur.handle.IsZero() || o.exeHandle() == x.cur.handle) {
		return true
	}
	for _, f := range x.former {
		if f.id == id && o.exeHandle() == f.handle {
			return true
		}
	}
	return false
}

// refresh looks the entry p up again. A changed resolution moves the
// old one to the former ones (with a handle only: without one, a
// running old inode cannot be told from a reuse of its number).
func (a *allowIDs) refresh(e *Engine, g *group, p string, now int64) *allowEntry {
	k := allowKey{g, p}
	x := a.m[k]
	r, real := e.resolve(g, p)
	if x == nil {
		x = &allowEntry{}
		a.m[k] = x
		if g == e.host {
			// What the path named when the daemon last ran: the
			// builds that may still run.
			for _, f := range e.allowSeeds[p] {
				if f != r && len(x.former) < maxFormer {
					x.former = append(x.former, f)
				}
			}
		}
	}
	if r != x.cur {
		if x.cur.id != (devIno{}) && !x.cur.handle.IsZero() {
			x.former = append([]resolution{x.cur}, x.former...)
			if len(x.former) > maxFormer {
				x.former = x.former[:maxFormer]
			}
		}
		x.cur = r
		if g == e.host {
			a.save(e)
		}
	}
	x.at, x.real = now, real
	return x
}

// save hands what the host's entries resolve to to the state writer.
// It runs when a resolution changes, which a program's upgrade or a
// first look-up makes: rarely.
func (a *allowIDs) save(e *Engine) {
	if a.store == nil {
		return
	}
	st := allowstate.Entries{}
	for k, x := range a.m {
		if k.g != e.host {
			continue
		}
		var rs []allowstate.Resolution
		for _, r := range append([]resolution{x.cur}, x.former...) {
			if r.id != (devIno{}) && !r.handle.IsZero() {
				rs = append(rs, allowstate.Resolution{Dev: r.id.Dev, Ino: r.id.Ino, Handle: r.handle})
			}
		}
		if len(rs) > 0 && len(st) < allowstate.MaxEntries {
			st[k.path] = rs
		}
	}
	a.store.Save(st)
}

// sweep drops the former resolutions whose inode is gone: no process
// runs it any more, and its number may be another file's.
func (a *allowIDs) sweep(e *Engine) {
	changed := false
	for k, x := range a.m {
		if len(x.former) == 0 {
			continue
		}
		dir := k.path[:strings.LastIndexByte(k.path, '/')+1]
		pfd, err := fsys.OpenInRoot(k.g.RootFD, dir, unix.O_DIRECTORY, 0)
		if err != nil {
			continue
		}
		// open_by_handle_at takes no O_PATH descriptor (EBADF): the
		// same directory, opened for reading.
		fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(pfd)
		if err != nil {
			continue
		}
		live := x.former[:0]
		for _, f := range x.former {
			if !f.handle.Gone(fd) {
				live = append(live, f)
			}
		}
		clear(x.former[len(live):])
		if len(live) != len(x.former) && k.g == e.host {
			changed = true
		}
		x.former = live
		unix.Close(fd)
	}
	if changed {
		a.save(e)
	}
}

// resolve stats path in g's root (confined to it), following links: its
// identity, its handle, and the path of the file it resolved to as the
// group's processes see it.
func (e *Engine) resolve(g *group, path string) (resolution, string) {
	fd, err := fsys.OpenInRoot(g.RootFD, path, 0, 0)
	if err != nil {
		return resolution{}, ""
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return resolution{}, ""
	}
	r := resolution{id: devIno{st.Dev, st.Ino}}
	r.handle, _ = proc.HandleOf(fd)
	var buf [unix.PathMax]byte
	real := ""
	if n, err := fsys.FDPath(fd, buf[:]); err == nil {
		real = g.Inside(string(buf[:n]))
	}
	return r, real
}

// resolveID is the identity path names in g's root.
func (e *Engine) resolveID(g *group, path string) devIno {
	r, _ := e.resolve(g, path)
	return r.id
}
