package engine

import (
	"fmt"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
)

// waker ends the permission loop's blocking read(2): a memfd of the
// daemon's own, marked in the permission group, whose opening makes an
// event the loop wakes for (and, being the daemon's own, allows at once).
// Nothing else wakes a thread blocked in read(2) on a fanotify fd: a
// closed fd does not, and Go restarts syscalls that signals interrupt.
type waker struct {
	fd   int
	path string
}

func newWaker(g *fanotify.Group) (*waker, error) {
	fd, err := unix.MemfdCreate("fsmon-wake", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	if err := g.Add(fd, fanotify.OpenPerm); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("marking the wake file: %w", err)
	}
	return &waker{fd: fd, path: "/proc/self/fd/" + strconv.Itoa(fd)}, nil
}

func (w *waker) wake() {
	if fd, err := unix.Open(w.path, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(fd)
	}
}

func (w *waker) close() { unix.Close(w.fd) }
