package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// TestConfigPathThatIsNotAFile: a FIFO, a directory or /dev/zero as the
// configuration is a clear "FILE: not a regular file" error at once:
// from --config.check and at start (exit 1), and on reload (the old
// configuration stays in force, the reload metric says 0, and SIGTERM
// still ends the daemon). A FIFO used to block all three for good.
func TestConfigPathThatIsNotAFile(t *testing.T) {
	bin := testroot.Binary(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// run runs the binary, which must end on its own: the context is a
	// hang detector, not a wait.
	run := func(args ...string) (string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
		if ctx.Err() != nil {
			t.Fatalf("%v hung: %s", args, out)
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}
	for path, kind := range map[string]string{fifo: "named pipe", dir: "directory", "/dev/zero": "character device"} {
		out, code := run("--config.check", "--config.file="+path)
		if code != 1 || !strings.Contains(out, path+": not a regular file: it is a "+kind) {
			t.Errorf("--config.check of %s: exit %d, %s", path, code, out)
		}
		out, code = run("--config.file="+path, "--web.listen-address="+testroot.FreeAddr(t))
		if code != 1 || !strings.Contains(out, path+": not a regular file") {
			t.Errorf("start with %s: exit %d, %s", path, code, out)
		}
	}

	// On reload: the link a ConfigMap mount would swap now names a FIFO.
	secret := secretFile(t)
	real := protectConfig(t, secret)
	link := filepath.Join(dir, "config.yml")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--config.file="+link)
	waitMetric(t, d, "fsmon_config_last_reload_successful", "1")
	os.Remove(link)
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	d.signal(t, syscall.SIGHUP)
	waitMetric(t, d, "fsmon_config_last_reload_successful", "0")
	if !strings.Contains(d.stderr.String(), link+": not a regular file") {
		t.Errorf("the reload error does not name the path and the problem:\n%s", d.stderr.String())
	}
	if out, err := runCmd(t, "cat", secret); err == nil || !strings.Contains(out, "not permitted") {
		t.Fatalf("after a reload from a FIFO the file is no longer protected: %v %s", err, out)
	}
	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("SIGTERM after a reload from a FIFO: want exit 0, got %v", err)
	}
}
