package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

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

	// On reload: the link a ConfigMap mount would swap names a FIFO, a
	// directory, /dev/zero in turn, with the good file back in between.
	secret := secretFile(t)
	real := protectConfig(t, secret)
	link := filepath.Join(dir, "config.yml")
	swap := func(to string) {
		t.Helper()
		os.Remove(link)
		if err := os.Symlink(to, link); err != nil {
			t.Fatal(err)
		}
	}
	swap(real)
	d := startDaemon(t, "--config.file="+link)
	waitMetric(t, d, "fsmon_config_last_reload_successful", "1")
	good := 0
	for _, bad := range []struct{ path, kind string }{{fifo, "a named pipe (FIFO)"}, {dir, "a directory"}, {"/dev/zero", "a character device"}} {
		swap(bad.path)
		d.signal(t, syscall.SIGHUP)
		// The line is the proof that this reload ended, and how.
		d.waitLog(t, 1, "reloading configuration failed; the previous configuration stays in force", link+": not a regular file: it is "+bad.kind)
		waitMetric(t, d, "fsmon_config_last_reload_successful", "0")
		mustBeDenied(t, secret, "after a reload from "+bad.kind)
		swap(real)
		d.signal(t, syscall.SIGHUP)
		good++
		d.waitLog(t, good, "configuration reloaded")
		waitMetric(t, d, "fsmon_config_last_reload_successful", "1")
	}
	swap(fifo)
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, 2, "reloading configuration failed; the previous configuration stays in force", link+": not a regular file: it is a named pipe")
	waitMetric(t, d, "fsmon_config_last_reload_successful", "0")
	d.signal(t, syscall.SIGTERM)
	if err := d.waitExit(t, shutdownWait); err != nil {
		t.Fatalf("SIGTERM after a reload from a FIFO: want exit 0, got %v", err)
	}
}

// shutdownWait is how long a test waits for the daemon to exit after
// SIGTERM: its own bound (stopBound, then the flush) with room for a
// loaded machine. A hang detector, not a wait.
const shutdownWait = 60 * time.Second

// permGroup is a fanotify permission group of the test's own that marks
// path (FAN_OPEN_PERM, and FAN_ONDIR for a directory) and never answers:
// whoever opens path then waits in the kernel until the group is closed.
// This is how a test makes a daemon's open block for real, as a file on
// a hung network file system would, with no hook in the daemon. events
// gets the pid of each opener.
func permGroup(t *testing.T, path string, dir bool) (events <-chan int32) {
	t.Helper()
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		t.Fatalf("fanotify_init: %v", err)
	}
	mask := uint64(unix.FAN_OPEN_PERM)
	if dir {
		mask |= unix.FAN_ONDIR
	}
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD, mask, unix.AT_FDCWD, path); err != nil {
		unix.Close(fd)
		t.Fatalf("fanotify_mark %s: %v", path, err)
	}
	ch := make(chan int32, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := unix.Read(fd, buf)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return // closed at cleanup
			}
			for off := 0; off+int(unsafe.Sizeof(unix.FanotifyEventMetadata{})) <= n; {
				m := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
				// The event's fd is kept, unanswered, until the group closes.
				select {
				case ch <- m.Pid:
				default:
				}
				off += int(m.Event_len)
			}
		}
	}()
	// Closing the group answers every pending event with allow.
	t.Cleanup(func() { unix.Close(fd) })
	return ch
}

// waitPid waits for an open by pid on a permGroup.
func waitPid(t *testing.T, events <-chan int32, pid int, what string) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case p := <-events:
			if int(p) == pid {
				return
			}
		case <-deadline:
			t.Fatalf("no open by the daemon (pid %d) %s within 60s", pid, what)
		}
	}
}

// TestReloadThatBlocksDoesNotStopSIGTERM: a reload whose read of the
// configuration file does not return (here an open held by a fanotify
// permission group that never answers, as an NFS server that stopped
// answering would) blocks only the reloader. The old configuration stays
// in force, later SIGHUPs are merged and logged, the metrics are served,
// and SIGTERM ends the daemon with 0.
func TestReloadThatBlocksDoesNotStopSIGTERM(t *testing.T) {
	secret := secretFile(t)
	cfg := protectConfig(t, secret)
	d := startDaemon(t, "--config.file="+cfg)
	waitMetric(t, d, "fsmon_config_last_reload_successful", "1")
	events := permGroup(t, cfg, false)
	d.signal(t, syscall.SIGHUP)
	waitPid(t, events, d.cmd.Process.Pid, "of the configuration file on SIGHUP")
	// The reload is now inside open(2) and stays there. Two more SIGHUPs:
	// one waits in the request slot, the other is merged with it; neither
	// may hold up the signal loop.
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, 1, "a configuration reload is still running; this request runs after it")
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, 2, "a configuration reload is still running; this request runs after it")
	mustBeDenied(t, secret, "while a reload is blocked")
	waitMetric(t, d, "fsmon_config_last_reload_successful", "1")
	d.signal(t, syscall.SIGTERM)
	if err := d.waitExit(t, shutdownWait); err != nil {
		t.Fatalf("SIGTERM while a reload blocks: want exit 0, got %v", err)
	}
}

// TestReloadStuckPlacingMarks: a reload whose walk blocks (opening a
// directory the new configuration covers is held the same way) keeps
// SIGTERM working too: the shutdown waits for it only up to its bound and
// exits 1 saying so, and a second SIGTERM exits 1 at once.
func TestReloadStuckPlacingMarks(t *testing.T) {
	for _, second := range []bool{false, true} {
		t.Run(map[bool]string{false: "one SIGTERM", true: "two SIGTERMs"}[second], func(t *testing.T) {
			secret := secretFile(t)
			cfg := protectConfig(t, secret)
			d := startDaemon(t, "--config.file="+cfg)
			waitMetric(t, d, "fsmon_config_last_reload_successful", "1")
			tree := t.TempDir()
			sub := filepath.Join(tree, "sub")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			writeConfig(t, cfg, fmt.Sprintf(`
profiles:
  - name: e2e
    host: true
    mode: protect
    filters:
      - name: secret
        path: %s
        behavior: block
        allow: [/usr/bin/head]
      - name: tree
        path: %s
        recursive: true
`, secret, tree))
			events := permGroup(t, sub, true)
			d.signal(t, syscall.SIGHUP)
			waitPid(t, events, d.cmd.Process.Pid, "of the directory the reload walks")
			mustBeDenied(t, secret, "while a reload's walk is blocked")
			d.signal(t, syscall.SIGTERM)
			d.waitLog(t, 1, "shutting down")
			if second {
				d.signal(t, syscall.SIGTERM)
			}
			err := d.waitExit(t, shutdownWait)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("want exit 1, got %v", err)
			}
			bounded := "a configuration reload is still placing marks; stopping without waiting for it"
			if !second {
				d.waitLog(t, 1, bounded)
				return
			}
			d.waitLog(t, 1, "second signal while shutting down; exiting at once")
			// It did not wait for the bound: the daemon is gone.
			if strings.Contains(d.stderr.String(), bounded) {
				t.Errorf("a second SIGTERM still waited for the shutdown's bound:\n%s", d.stderr.String())
			}
		})
	}
}
