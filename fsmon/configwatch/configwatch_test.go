package configwatch

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// watch runs a watcher of path and returns a channel with what each
// reported change saw.
func watch(t *testing.T, path string) <-chan fingerprint {
	t.Helper()
	w, err := New(path, Options{Quiet: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	changes := make(chan fingerprint, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, func() { changes <- w.last })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return changes
}

// waitChange waits for a change that saw real at size bytes: one write
// may be reported twice on a loaded machine (its truncate and its write
// apart by more than Quiet), so earlier reports are skipped, never
// counted.
func waitChange(t *testing.T, changes <-chan fingerprint, what, real string, size int64) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case fp := <-changes:
			if fp.real == real && fp.size == size {
				return
			}
		case <-timeout:
			t.Fatalf("no change to %s (%d bytes) reported within 30s after %s", real, size, what)
		}
	}
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFollowsTheSymlink: a path that is a symlink to a file elsewhere
// (as /etc/fsmon_exporter/config.yml -> /srv/cfg/fsmon.yml) reports a
// write in place of the target, whose directory is not the path's; once
// the link is pointed elsewhere, writes of the new target are reported,
// the old target's no longer.
func TestFollowsTheSymlink(t *testing.T) {
	dir, a, b := t.TempDir(), t.TempDir(), t.TempDir()
	write(t, filepath.Join(a, "real.yml"), "a1\n")
	write(t, filepath.Join(b, "real.yml"), "b1\n")
	link := filepath.Join(dir, "config.yml")
	if err := os.Symlink(filepath.Join(a, "real.yml"), link); err != nil {
		t.Fatal(err)
	}
	changes := watch(t, link)

	write(t, filepath.Join(a, "real.yml"), "a2 longer\n")
	waitChange(t, changes, "a write of the symlink's target", filepath.Join(a, "real.yml"), 10)

	tmp := filepath.Join(dir, "config.yml.tmp")
	if err := os.Symlink(filepath.Join(b, "real.yml"), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	waitChange(t, changes, "the symlink pointed at another file", filepath.Join(b, "real.yml"), 3)

	write(t, filepath.Join(b, "real.yml"), "b2 longer\n")
	waitChange(t, changes, "a write of the new target", filepath.Join(b, "real.yml"), 10)
}
