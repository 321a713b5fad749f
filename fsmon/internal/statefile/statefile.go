// Package statefile keeps one small file of the daemon's state across
// restarts: read only if the daemon's user alone can have written it,
// bounded in size, replaced atomically, and set aside rather than lost
// when it cannot be read. The allow list resolutions (allowstate) and
// the learned set (learnstate) are such files; each says what its file
// holds, this package how it is kept.
package statefile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Read returns the content of the state file name, at most max bytes.
// A missing file is no error: nothing was kept (nil, nil). The file must
// be a regular file that only its owner, the daemon's user, can write:
// what it holds allows programs, so a file others could write would let
// them allow theirs.
func Read(name string, max int64) ([]byte, error) {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", name, st.Mode().Type())
	}
	if st.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("%s: writable by group or others (mode %04o)", name, st.Mode().Perm())
	}
	if uid := ownerOf(st); uid != uint32(os.Geteuid()) {
		return nil, fmt.Errorf("%s: owned by uid %d, not by the daemon's uid %d", name, uid, os.Geteuid())
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, max)
	}
	// One byte more than the size: a file that grew since the stat is
	// seen to be too big rather than read cut short.
	b := make([]byte, st.Size()+1)
	n, err := f.ReadAt(b, 0)
	if err != nil && n == 0 && st.Size() > 0 {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if int64(n) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, max)
	}
	// A non-empty file is never "nothing kept".
	if b = b[:n]; b == nil {
		b = []byte{}
	}
	return b, nil
}

// DecodeJSON decodes the one JSON object of b into v, refusing unknown
// fields and anything after the object; errors name the file, and the
// line where the JSON is wrong.
func DecodeJSON(name string, b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return fmt.Errorf("%s:%d: %w", name, lineOf(b, se.Offset), err)
		case errors.As(err, &te):
			return fmt.Errorf("%s:%d: %w", name, lineOf(b, te.Offset), err)
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			return fmt.Errorf("%s: empty or cut short (not a JSON object): %w", name, err)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	if dec.More() {
		return fmt.Errorf("%s: data after the JSON object", name)
	}
	return nil
}

// lineOf is the 1-based line of byte offset off in b.
func lineOf(b []byte, off int64) int {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	return bytes.Count(b[:off], []byte{'\n'}) + 1
}

// SetAside renames a state file that could not be read to NAME.bad, so
// that a fresh one can be written without losing it, and returns the
// new name.
func SetAside(name string) (string, error) {
	bad := name + ".bad"
	if err := os.Rename(name, bad); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("setting aside %s: %w", name, err)
	}
	return bad, nil
}

// Write replaces the file name atomically with b: a new file (mode
// 0600), synced, renamed over the old one, the directory synced. The
// directory is made (mode 0700) if missing.
func Write(name string, b []byte) error {
	dir := filepath.Dir(name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, filepath.Base(name)+".*")
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Writer writes a state file from a goroutine of its own, so that the
// loops that change the state hand it over and never wait for a disk.
// Changed says there is something new; the writer then asks encode for
// the content (nil: nothing to write) and writes it, at most once per
// interval, so that a state that changes at every event costs one write
// an interval, not one an event.
type Writer struct {
	name     string
	encode   func() []byte
	interval time.Duration
	err      func(error)
	ready    chan struct{}
	mu       sync.Mutex
	lastErr  string
}

// NewWriter writes the file name; onErr hears of failed writes (one
// call per failure that differs from the last one).
func NewWriter(name string, interval time.Duration, encode func() []byte, onErr func(error)) *Writer {
	return &Writer{name: name, encode: encode, interval: interval, err: onErr, ready: make(chan struct{}, 1)}
}

// Name is the file the writer writes.
func (w *Writer) Name() string { return w.name }

// Changed says the state changed; it never blocks.
func (w *Writer) Changed() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// Run writes what changes until stop closes, then writes what is still
// pending and returns. encode is asked at every write, so it must
// return nil when nothing changed since it last returned content.
func (w *Writer) Run(stop <-chan struct{}) {
	var hold <-chan time.Time
	pending := false
	for {
		select {
		case <-w.ready:
			if hold == nil {
				w.flush()
				if w.interval > 0 {
					hold = time.After(w.interval)
				}
			} else {
				pending = true
			}
		case <-hold:
			hold = nil
			if pending {
				pending = false
				w.flush()
				hold = time.After(w.interval)
			}
		case <-stop:
			// encode says whether anything is left to write.
			w.flush()
			return
		}
	}
}

// Flush writes the current state now, from the caller's goroutine.
func (w *Writer) Flush() { w.flush() }

func (w *Writer) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.encode()
	if b == nil {
		return
	}
	err := Write(w.name, b)
	if err == nil {
		w.lastErr = ""
		return
	}
	if err.Error() != w.lastErr && w.err != nil {
		w.err(err)
	}
	w.lastErr = err.Error()
}

// ownerOf is the uid that owns the file st describes.
func ownerOf(st fs.FileInfo) uint32 {
	if s, ok := st.Sys().(*syscall.Stat_t); ok {
		return s.Uid
	}
	return ^uint32(0)
}
