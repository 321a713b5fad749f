// Package configwatch tells when a configuration file has changed on
// disk, however it was changed: written in place, replaced by a rename
// (editors, `install`), or swapped by a Kubernetes ConfigMap update, in
// which kubelet writes the new files to a new directory `..2026_…`, points
// a new symlink at it and renames that over `..data` in one step, while
// the file the daemon was given (`config.yml -> ..data/config.yml`) never
// changes itself.
//
// It watches with inotify, as fsnotify users (Prometheus' file SD,
// kubernetes' own config watchers) do for ConfigMaps: the directory of
// the path as given (where `..data` is swapped), the directory the path
// resolves to, and the resolved file itself (a write through another
// mount of it, a bind-mounted file, reaches only the inode). Events only
// wake it: a change is a different (device, inode, size, mtime, ctime) of
// what the path resolves to, or a different resolved path, so that events
// of other files in those directories cost a stat and nothing more. A
// burst of events (an editor's write, rename and chmod) is one change,
// reported once the directory has been quiet for Quiet. After each change
// the watches follow the path to where it resolves now.
//
// The package knows nothing of what a reload does; main hands it a
// function.
package configwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/inotify"
)

// DefaultQuiet is how long the watched directories must be quiet after an
// event before the change is reported: long enough to make one change of
// an editor's save (write, rename, chmod) or of a ConfigMap update, short
// against kubelet's own delay in rolling a ConfigMap out (a minute or so).
const DefaultQuiet = 500 * time.Millisecond

// maxDelay bounds how long a change waits for quiet: a directory that is
// never quiet (a busy /etc) still gets its changed file reloaded.
const maxDelay = 10 * time.Second

// mask is what wakes the watcher on the directories and on the file.
const mask = inotify.Modify | inotify.Attrib | inotify.CloseWrite | inotify.MovedFrom | inotify.MovedTo |
	inotify.Create | inotify.Delete | inotify.DeleteSelf | inotify.MoveSelf

// Watcher watches one configuration path.
type Watcher struct {
	path   string
	quiet  time.Duration
	logger *slog.Logger
	in     *inotify.Instance
	wds    map[int]string // watch descriptor → what it watches, for logs
	last   fingerprint
}

// Options configures New.
type Options struct {
	// Quiet is DefaultQuiet when 0.
	Quiet  time.Duration
	Logger *slog.Logger
}

// New watches path. What the path names at this call is the baseline:
// any change after it is reported by Run, also one that happens before
// Run starts (the kernel queues the events), so a caller that creates the
// watcher before it first loads the file misses no change.
func New(path string, opts Options) (*Watcher, error) {
	if opts.Quiet <= 0 {
		opts.Quiet = DefaultQuiet
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("watching configuration %s: %w", path, err)
	}
	in, err := inotify.New()
	if err != nil {
		return nil, fmt.Errorf("watching configuration %s: %w", path, err)
	}
	w := &Watcher{path: abs, quiet: opts.Quiet, logger: opts.Logger, in: in, wds: map[int]string{}}
	if err := w.rewatch(); err != nil {
		in.Close()
		return nil, fmt.Errorf("watching configuration %s: %w", path, err)
	}
	w.last = w.fingerprint()
	return w, nil
}

// Close stops watching; Run returns when its context ends, and closes the
// watcher itself then.
func (w *Watcher) Close() error { return w.in.Close() }

// Run calls changed once for every change of the file, until ctx ends,
// then closes the watcher. changed runs on Run's goroutine and must not
// block for long (main's reloader only queues a request).
func (w *Watcher) Run(ctx context.Context, changed func()) {
	defer w.in.Close()
	wake := make(chan struct{}, 1)
	go w.read(wake)
	var (
		timer   *time.Timer
		fire    <-chan time.Time
		pending time.Time // first event of the burst being waited out
	)
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-wake:
			if !ok {
				return // the instance failed or was closed
			}
			now := time.Now()
			if pending.IsZero() {
				pending = now
			}
			wait := w.quiet
			if rest := maxDelay - now.Sub(pending); rest < wait {
				wait = max(rest, 0)
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			fire = timer.C
		case <-fire:
			fire, pending = nil, time.Time{}
			if err := w.rewatch(); err != nil {
				w.logger.Warn("configuration watch could not follow the file; it is looked at again at the next event in its directory", "file", w.path, "err", err)
			}
			now := w.fingerprint()
			if now == w.last {
				continue
			}
			w.last = now
			changed()
		}
	}
}

// read turns the instance's events into wakes; it ends, closing wake,
// when the instance is closed or fails.
func (w *Watcher) read(wake chan<- struct{}) {
	defer close(wake)
	buf := make([]byte, 16*1024)
	f := w.in.File()
	for {
		n, err := f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				w.logger.Error("configuration watch stopped; the file is reloaded on SIGHUP only", "file", w.path, "err", err)
			}
			return
		}
		if n == 0 {
			continue
		}
		// Which file an event names does not matter (the fingerprint
		// decides), nor does an overflow: any event is a wake.
		select {
		case wake <- struct{}{}:
		default: // a wake is pending already
		}
	}
}

// rewatch watches the directory of the path as given, the directory of
// what it resolves to, and the resolved file, and drops the watches of
// what it no longer resolves through. A path that does not resolve (a
// file deleted, to be put back) keeps the directory watches it can place.
func (w *Watcher) rewatch() error {
	targets := []string{filepath.Dir(w.path)}
	real, rerr := filepath.EvalSymlinks(w.path)
	if rerr == nil {
		targets = append(targets, filepath.Dir(real), real)
	}
	keep := map[int]bool{}
	var first error
	for _, t := range targets {
		wd, err := w.add(t)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		keep[wd] = true
		w.wds[wd] = t
	}
	for wd := range w.wds {
		if !keep[wd] {
			// Gone already (IN_IGNORED) is fine: only the watch's end matters.
			_ = w.in.Remove(wd)
			delete(w.wds, wd)
		}
	}
	if len(keep) == 0 {
		return first
	}
	if rerr != nil {
		return rerr
	}
	return first
}

// add watches what p names; the same inode twice is the same watch.
func (w *Watcher) add(p string) (int, error) {
	fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: p, Err: err}
	}
	defer unix.Close(fd)
	wd, err := w.in.AddFD(fd, mask)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", p, err)
	}
	return wd, nil
}

// fingerprint is what the path names now, as far as a change is
// concerned; no file is opened, so a FIFO or a hung mount cannot make the
// watcher wait on a read (a stat of a hung mount still can: it then waits
// alone, never the signal loop).
type fingerprint struct {
	real        string
	dev, ino    uint64
	size        int64
	mtime       int64
	ctime       int64
	errno       syscall.Errno // the stat failed: a missing file is a change too
	unresolved  bool
	description string
}

func (w *Watcher) fingerprint() fingerprint {
	var fp fingerprint
	real, err := filepath.EvalSymlinks(w.path)
	if err != nil {
		fp.unresolved = true
		fp.description = err.Error()
		return fp
	}
	fp.real = real
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		fp.errno, _ = err.(syscall.Errno)
		return fp
	}
	fp.dev, fp.ino, fp.size = st.Dev, st.Ino, st.Size
	fp.mtime = st.Mtim.Nano()
	fp.ctime = st.Ctim.Nano()
	return fp
}
