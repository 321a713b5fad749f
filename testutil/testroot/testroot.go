// Package testroot holds the rule every root-only test follows: skip with
// a clear message when not root, except under CI (CI=true), where a skip
// would hide a missing test and is a failure instead. It is not internal
// so that the test modules of the repository (dashboards/test) use it too.
package testroot

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// Require skips or fails t when the process is not root.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (fanotify needs CAP_SYS_ADMIN); CI runs as root, so not being root here is a failure")
	}
	t.Skip("needs root (fanotify needs CAP_SYS_ADMIN): run `make test` as root")
}

// Unavailable skips t because something the test needs is missing on
// this machine (a kernel feature, a cgroup, overlayfs), except under CI,
// where the machine is known to have it, so a skip would hide a missing
// test: there it fails with the same message.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true, where this must be available: "+format, args...)
	}
	t.Skipf(format, args...)
}

// RequireCommand skips or fails t when a program the test drives is
// missing; under CI it must be there, since the Makefile installs it.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found; the Makefile should have installed it: %v", name, err)
	}
	t.Skipf("%s not found (make test installs it): %v", name, err)
	return ""
}

// Binary returns the path of the built fsmon_exporter binary that
// end-to-end tests start: $FSMON_BINARY, set by `make test`.
func Binary(t testing.TB) string {
	t.Helper()
	return EnvPath(t, "FSMON_BINARY", "make test builds the binary and sets it")
}

// EnvPath returns the file an environment variable names, a program the
// Makefile builds for the tests (the daemon, the test collector). Unset,
// the test skips, except under CI, where it fails: make test sets it.
func EnvPath(t testing.TB, name, hint string) string {
	t.Helper()
	p := os.Getenv(name)
	if p == "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not set; run the tests through `make test` (%s)", name, hint)
		}
		t.Skipf("%s is not set: run through `make test` (%s)", name, hint)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s=%s: %v", name, p, err)
	}
	return p
}

// FreeAddr returns a loopback address with a port that was free a moment
// ago, for a server a test starts.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Buffer collects what a child process writes (exec's copier goroutine)
// for the test to read at the same time.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// HostShadowLock holds, until the test ends, the lock of the tests
// that change who may open the host's /etc/shadow (a daemon running
// examples/host-protect.yaml denies every other program) or that need
// the host's /etc/shadow readable: go test runs packages in parallel,
// and such tests in two packages would fail each other. It is a
// flock(2) on a file in the system's temporary directory, so it also
// holds between test binaries; waiting for it waits for a test that
// ends.
func HostShadowLock(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "fsmon-tests-host-shadow.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // closing the last descriptor drops the lock
}
