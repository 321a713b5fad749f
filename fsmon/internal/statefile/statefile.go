// Package statefile keeps the daemon's small state files under
// --state.dir: what allow entries resolved to (allowstate), the
// baseline of watched files (baseline). It owns what they have in
// common and nothing of their content: opening one only if it can be
// trusted (a regular file, not a symlink, that only the daemon's user
// can write, of a bounded size), setting one that cannot be read aside
// so that a fresh one can be written without losing it, and replacing
// one atomically, from a goroutine of its own, so that the loop that
// hands a state over never waits for a disk.
package statefile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Open opens the state file name in dir for reading, and returns it
// with its size; (nil, 0, nil) when it does not exist: nothing was
// kept. The file must be a regular file that only its owner, the
// daemon's user, can write, and at most maxBytes long: what it holds
// steers the daemon, so a file others could write would let them steer
// it, and a huge one would cost the daemon its memory at start. Errors
// name the file.
func Open(dir, name string, maxBytes int64) (*os.File, int64, error) {
	p := filepath.Join(dir, name)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("%s: %w", p, err)
	}
	if err := trusted(p, st, maxBytes); err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, st.Size(), nil
}

// trusted says what is wrong with a state file st describes, if
// anything.
func trusted(p string, st fs.FileInfo, maxBytes int64) error {
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file (%s)", p, st.Mode().Type())
	}
	if st.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("%s: writable by group or others (mode %04o)", p, st.Mode().Perm())
	}
	if uid := ownerOf(st); uid != uint32(os.Geteuid()) {
		return fmt.Errorf("%s: owned by uid %d, not by the daemon's uid %d", p, uid, os.Geteuid())
	}
	if st.Size() > maxBytes {
		return fmt.Errorf("%s: %d bytes, larger than the %d a state file may have", p, st.Size(), maxBytes)
	}
	return nil
}

// ReadAll is Open and the whole content: nil, nil when the file does
// not exist.
func ReadAll(dir, name string, maxBytes int64) ([]byte, error) {
	f, size, err := Open(dir, name, maxBytes)
	if f == nil || err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, size+1)
	n, err := f.ReadAt(b, 0)
	if err != nil && n == 0 && size > 0 {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return b[:n], nil
}

// SetAside renames a state file that could not be read to NAME.bad, so
// that a fresh one can be written without losing it, and returns the
// new path.
func SetAside(dir, name string) (string, error) {
	p := filepath.Join(dir, name)
	bad := p + ".bad"
	if err := os.Rename(p, bad); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("setting aside %s: %w", p, err)
	}
	return bad, nil
}

// Writer writes the latest state of type T handed to it, encoded by
// encode, from a goroutine of its own (Run).
type Writer[T any] struct {
	dir, name string
	encode    func(T, io.Writer) error
	mu        sync.Mutex
	next      T
	pending   bool
	ready     chan struct{}
	err       func(error)
}

// NewWriter writes the file name into dir (made, mode 0700, at the
// first write); onErr hears of failed writes.
func NewWriter[T any](dir, name string, encode func(T, io.Writer) error, onErr func(error)) *Writer[T] {
	return &Writer[T]{dir: dir, name: name, encode: encode, ready: make(chan struct{}, 1), err: onErr}
}

// Save hands s over to be written; a later Save replaces it if it has
// not been written yet. s must not change afterwards.
func (w *Writer[T]) Save(s T) {
	w.mu.Lock()
	w.next, w.pending = s, true
	w.mu.Unlock()
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// Run writes what is handed over until stop closes, then writes what is
// still pending and returns.
func (w *Writer[T]) Run(stop <-chan struct{}) {
	for {
		select {
		case <-w.ready:
			w.flush()
		case <-stop:
			w.flush()
			return
		}
	}
}

func (w *Writer[T]) flush() {
	w.mu.Lock()
	s, ok := w.next, w.pending
	var zero T
	w.next, w.pending = zero, false
	w.mu.Unlock()
	if !ok {
		return
	}
	if err := Write(w.dir, w.name, func(f io.Writer) error { return w.encode(s, f) }); err != nil && w.err != nil {
		w.err(err)
	}
}

// Write replaces the state file name in dir atomically with what
// content writes: a new file (mode 0600), synced, renamed over the old
// one, the directory synced. A crash leaves the old file or the new
// one, never a part of either.
func Write(dir, name string, content func(io.Writer) error) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	p := filepath.Join(dir, name)
	tmp, err := os.CreateTemp(dir, name+".*")
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if err := content(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", p, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", p, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// ownerOf is the uid that owns the file st describes.
func ownerOf(st fs.FileInfo) uint32 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Uid
	}
	return ^uint32(0)
}

// WriteBytes is Write of b.
func WriteBytes(dir, name string, b []byte) error {
	return Write(dir, name, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}
