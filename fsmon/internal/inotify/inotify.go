// Package inotify is a thin, typed layer over inotify(7): one instance,
// watches on directories, events read in batches. It knows nothing of
// policy.
package inotify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Mask is a set of inotify event bits.
type Mask uint32

const (
	Modify     Mask = unix.IN_MODIFY
	Attrib     Mask = unix.IN_ATTRIB
	CloseWrite Mask = unix.IN_CLOSE_WRITE
	MovedFrom  Mask = unix.IN_MOVED_FROM
	MovedTo    Mask = unix.IN_MOVED_TO
	Create     Mask = unix.IN_CREATE
	Delete     Mask = unix.IN_DELETE
	DeleteSelf Mask = unix.IN_DELETE_SELF
	MoveSelf   Mask = unix.IN_MOVE_SELF
	QOverflow  Mask = unix.IN_Q_OVERFLOW
	Ignored    Mask = unix.IN_IGNORED
	IsDir      Mask = unix.IN_ISDIR
	OnlyDir    Mask = unix.IN_ONLYDIR
	DontFollow Mask = unix.IN_DONT_FOLLOW
	MaskAdd    Mask = unix.IN_MASK_ADD
)

// Has reports whether every bit of o is in m.
func (m Mask) Has(o Mask) bool { return m&o == o }

// Any reports whether some bit of o is in m.
func (m Mask) Any(o Mask) bool { return m&o != 0 }

// ErrWatchLimit says fs.inotify.max_user_watches is exhausted.
var ErrWatchLimit = errors.New("inotify watch limit reached: raise fs.inotify.max_user_watches")

// Instance is one inotify instance.
type Instance struct {
	fd     int
	file   *os.File // owns fd; non-blocking, for the Go netpoller
	closed atomic.Bool
}

// New makes an instance.
func New() (*Instance, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	return &Instance{fd: fd, file: os.NewFile(uintptr(fd), "inotify")}, nil
}

// File is the instance's descriptor as an *os.File, for reading through
// the Go netpoller.
func (in *Instance) File() *os.File { return in.file }

// FD is the instance's descriptor, for polling.
func (in *Instance) FD() int { return in.fd }

// Close closes the instance and so every watch.
func (in *Instance) Close() error {
	if in.closed.Swap(true) {
		return nil
	}
	return in.file.Close()
}

// AddFD watches the object an O_PATH fd refers to. Watches are placed by
// path, so the fd goes through /proc/self/fd: the watch lands on exactly
// the inode the fd was resolved to, whatever symlinks the path holds.
func (in *Instance) AddFD(fd int, mask Mask) (int, error) {
	wd, err := unix.InotifyAddWatch(in.fd, "/proc/self/fd/"+strconv.Itoa(fd), uint32(mask))
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return -1, fmt.Errorf("inotify_add_watch: %w: %w", ErrWatchLimit, err)
		}
		return -1, fmt.Errorf("inotify_add_watch: %w", err)
	}
	return wd, nil
}

// Remove removes a watch.
func (in *Instance) Remove(wd int) error {
	if _, err := unix.InotifyRmWatch(in.fd, uint32(wd)); err != nil {
		return fmt.Errorf("inotify_rm_watch(%d): %w", wd, err)
	}
	return nil
}

// Read reads a batch of events into buf.
func (in *Instance) Read(buf []byte) (int, error) {
	for {
		n, err := unix.Read(in.fd, buf)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

// Event is one parsed event; Name refers into the read buffer.
type Event struct {
	WD     int
	Mask   Mask
	Cookie uint32
	Name   []byte
}

const headerLen = unix.SizeofInotifyEvent

// ErrShortEvent says a read returned a truncated event.
var ErrShortEvent = errors.New("inotify: truncated event")

// Parse calls fn for each event in buf.
func Parse(buf []byte, fn func(ev *Event)) error {
	var ev Event
	for off := 0; off < len(buf); {
		if len(buf)-off < headerLen {
			return ErrShortEvent
		}
		h := buf[off : off+headerLen]
		nameLen := int(binary.NativeEndian.Uint32(h[12:16]))
		if off+headerLen+nameLen > len(buf) {
			return ErrShortEvent
		}
		name := buf[off+headerLen : off+headerLen+nameLen]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		ev = Event{
			WD:     int(int32(binary.NativeEndian.Uint32(h[0:4]))),
			Mask:   Mask(binary.NativeEndian.Uint32(h[4:8])),
			Cookie: binary.NativeEndian.Uint32(h[8:12]),
			Name:   name,
		}
		fn(&ev)
		off += headerLen + nameLen
	}
	return nil
}

// WatchLimit reads fs.inotify.max_user_watches.
func WatchLimit() int {
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_user_watches")
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}
