package policy

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLoadReadsOnlyRegularFiles: a FIFO, a directory, devices and a
// socket as the configuration path are a clear error at once, naming the
// path and what it is; a FIFO used to block the read for good (and with
// it --config.check, or the signal loop of a reload). A symlink to a
// regular file (a Kubernetes ConfigMap's layout) is read.
func TestLoadReadsOnlyRegularFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock.yml")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for path, kind := range map[string]string{
		fifo:        "a named pipe (FIFO)",
		dir:         "a directory",
		"/dev/zero": "a character device",
		"/dev/null": "a character device",
		sock:        "a socket",
	} {
		done := make(chan error, 1)
		go func() { _, err := Load(path); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, ErrNotRegular) || !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), kind) {
				t.Errorf("Load(%s): %v, want %q: ...ErrNotRegular... %s", path, err, path, kind)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Load(%s) hung", path) // a hang detector, not a wait
		}
	}
	real := filepath.Join(dir, "..data", "config.yml")
	os.MkdirAll(filepath.Dir(real), 0o755)
	if err := os.WriteFile(real, []byte("profiles:\n  - name: a\n    filters: [{path: /etc/hosts}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "config.yml")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if cfg, err := Load(link); err != nil || len(cfg.Profiles) != 1 {
		t.Fatalf("Load through a symlink: %v", err)
	}
	if err := os.Symlink(fifo, filepath.Join(dir, "to-fifo.yml")); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(filepath.Join(dir, "to-fifo.yml")); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("Load of a symlink to a FIFO: %v", err)
	}
}
