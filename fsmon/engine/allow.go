package engine

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// allowIDs caches the identity (device, inode) of the executables that
// allow lists name, per group: the entry /usr/sbin/nginx of a container
// profile is that container's nginx. It belongs to the permission loop
// alone. A miss looks the entries up again, so an executable replaced by
// an upgrade (a new inode) is allowed again at its first open, and a
// reload or a container that goes clears it. Again at most every
// allowRecheck: a process outside the list, opening in a loop, would
// otherwise pay for a walk of every entry at each open.
type allowIDs struct {
	gen uint64
	m   map[allowKey]allowID

	// fakeNow, set by tests, stands in for the clock (unix nanoseconds)
	// when not zero, so that a test can step past allowRecheck.
	fakeNow atomic.Int64
}

type allowKey struct {
	g    *group
	path string
}

type allowID struct {
	id devIno
	at int64 // unix nanoseconds of the look-up
}

const allowRecheck = 100 * time.Millisecond

func (a *allowIDs) has(e *Engine, g *group, paths []string, id devIno) bool {
	if gen := e.allowGen.Load(); a.m == nil || a.gen != gen {
		a.m, a.gen = map[allowKey]allowID{}, gen
	}
	now := a.fakeNow.Load()
	if now == 0 {
		now = time.Now().UnixNano()
	}
	stale := false
	for _, p := range paths {
		x, ok := a.m[allowKey{g, p}]
		if ok && x.id == id {
			return true
		}
		if !ok || now-x.at >= int64(allowRecheck) {
			stale = true
		}
	}
	if !stale {
		return false
	}
	// Not a known one: the entries may have been replaced since.
	found := false
	for _, p := range paths {
		x := e.resolveID(g, p)
		a.m[allowKey{g, p}] = allowID{x, now}
		if x == id && x != (devIno{}) {
			found = true
		}
	}
	return found
}

// resolveID stats path in g's root (confined to it), following links.
func (e *Engine) resolveID(g *group, path string) devIno {
	w := walker{e: e, g: g, rootFD: g.RootFD}
	fd, err := w.openIn(path, 0, 0)
	if err != nil {
		return devIno{}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return devIno{}
	}
	return devIno{st.Dev, st.Ino}
}
