package engine

import (
	"golang.org/x/sys/unix"
)

// allowIDs caches the identity (device, inode) of the executables that
// allow lists name, per group: the entry /usr/sbin/nginx of a container
// profile is that container's nginx. It belongs to the permission loop
// alone. A miss looks the entries up again, so an executable replaced by
// an upgrade (a new inode) is allowed again at its first open, and a
// reload or a container that goes clears it.
type allowIDs struct {
	gen uint64
	m   map[allowKey]devIno
}

type allowKey struct {
	g    *group
	path string
}

func (a *allowIDs) has(e *Engine, g *group, paths []string, id devIno) bool {
	if gen := e.allowGen.Load(); a.m == nil || a.gen != gen {
		a.m, a.gen = map[allowKey]devIno{}, gen
	}
	for _, p := range paths {
		if x, ok := a.m[allowKey{g, p}]; ok && x == id {
			return true
		}
	}
	// Not a known one: the entries may have been replaced since.
	found := false
	for _, p := range paths {
		x := e.resolveID(g, p)
		a.m[allowKey{g, p}] = x
		if x == id && x != (devIno{}) {
			found = true
		}
	}
	return found
}

// resolveID stats path in g's root (confined to it), following links.
func (e *Engine) resolveID(g *group, path string) devIno {
	w := walker{e: e, g: g, rootFD: g.rootFD}
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
