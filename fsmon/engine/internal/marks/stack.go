package marks

import (
	"errors"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// A walk keeps the directories whose children are still to be walked on
// a stack instead of recursing, so that no depth is too deep for it
// (issue 13: a walk that stopped at 64 levels left what lay below
// unmarked, and said it was ready). It holds no fd for a directory that
// waits: the directory is reopened when its turn comes, by its file
// handle (open_by_handle_at, at any depth and path length). Where
// handles cannot be opened (overlayfs without nfs_export gives handles
// for comparison only), it is reopened by its name in its parent, whose
// fd is kept while children of it wait: one fd per level of the branch
// being walked. What cannot be reopened (out of fds even so) is counted
// as unmarked.

// reopen is how a waiting directory is opened again.
type reopen uint8

const (
	byHandle reopen = iota // open_by_handle_at through the file system's mount fd
	byName                 // openat of its name in its parent's kept fd
	byPath                 // its path in the root (reached through a configured symlink)
)

// dirWork is a directory whose children are still to be walked.
type dirWork struct {
	up      *dirWork // the directory it was found in; nil where the walk started
	id      DevIno
	d       *Dir
	logical string
	comps   []string
	rels    []ruleRel
	how     reopen
	name    string // its name in up, for byName
	// fd is this directory's own fd, kept while children of it wait
	// that reopen byName in it (waiting counts them); -1 otherwise.
	fd      int
	waiting int
}

// onBranch reports whether the directory id is w or one of the
// directories above it: a bind mount that loops back, which must not be
// walked again (and again).
func (w *dirWork) onBranch(id DevIno) bool {
	for a := w; a != nil; a = a.up {
		if a.id == id {
			return true
		}
	}
	return false
}

// push adds a directory whose children are to be walked.
func (w *walker) push(x *dirWork) {
	if x.how == byName {
		x.up.waiting++
		raiseNoFile()
	}
	w.stack = append(w.stack, x)
}

// settle is done with fd, the fd of x that its children were walked
// from: it is kept while children of x wait to be reopened by name in
// it, and closed otherwise.
func (w *walker) settle(x *dirWork, fd int) {
	if x.waiting > 0 {
		x.fd = fd
		return
	}
	unix.Close(fd)
}

// drain walks what the stack holds, depth first.
func (w *walker) drain() {
	for len(w.stack) > 0 {
		x := w.stack[len(w.stack)-1]
		w.stack[len(w.stack)-1] = nil
		w.stack = w.stack[:len(w.stack)-1]
		fd, err := w.reopen(x)
		if err != nil {
			if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESTALE) && !errors.Is(err, errMoved) {
				w.fail(x.logical, err, guarding(x.rels))
			}
			continue
		}
		w.children(fd, x)
		w.settle(x, fd)
	}
}

// errMoved says a name no longer leads to the directory it named: gone
// or replaced since; a tree event follows the new one.
var errMoved = errors.New("no longer the directory walked")

// reopen opens x again (O_PATH), as x.how says.
func (w *walker) reopen(x *dirWork) (int, error) {
	var fd int
	var err error
	switch x.how {
	case byHandle:
		var ok bool
		fd, ok, err = w.m.openKey(x.d.handle)
		if !ok && err == nil {
			err = errNoHandle
		}
		return fd, err // a handle names the directory itself: nothing to check
	case byName:
		fd, err = unix.Openat(x.up.fd, x.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_DIRECTORY, 0)
		if x.up.waiting--; x.up.waiting == 0 {
			unix.Close(x.up.fd)
			x.up.fd = -1
		}
	default:
		fd, err = w.openIn(x.logical, unix.O_DIRECTORY, 0)
	}
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || (DevIno{st.Dev, st.Ino}) != x.id {
		unix.Close(fd)
		if err == nil {
			err = errMoved
		}
		return -1, err
	}
	return fd, nil
}

var errNoHandle = errors.New("file system of the handle not known")

// handlesOpen reports whether directories on the file system dev (whose
// directory fd is one) can be reopened by their handles, key is one of
// them: tried once per file system and walk.
func (w *walker) handlesOpen(dev uint64, key string) bool {
	if ok, known := w.openable[dev]; known {
		return ok
	}
	fd, ok, err := w.m.openKey(key)
	if ok && err == nil {
		unix.Close(fd)
	}
	w.openable[dev] = ok && err == nil
	return ok && err == nil
}

var noFileOnce sync.Once

// raiseNoFile raises the soft limit of open fds to the hard one, the
// first time a walk keeps fds per level. The Go runtime does so at start
// already (os, since Go 1.19); this holds if something lowered it since.
func raiseNoFile() {
	noFileOnce.Do(func() {
		var lim syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil && lim.Cur < lim.Max {
			lim.Cur = lim.Max
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		}
	})
}
