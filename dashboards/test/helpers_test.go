package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// The root-test rule of the project (internal/testroot in the main module,
// which this module cannot import: internal packages do not cross module
// boundaries). Skip with a clear message when not root, except under CI
// (CI=true), where a skip would hide a missing test and is a failure.

// requireRoot skips or fails t when the process is not root.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root (fanotify needs CAP_SYS_ADMIN); CI runs as root, so not being root here is a failure")
	}
	t.Skip("needs root (fanotify needs CAP_SYS_ADMIN): run `make test` as root")
}

// requireCommand skips or fails t when a program the test drives is
// missing; under CI it must be there, since the Makefile installs it.
func requireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found; the Makefile should have installed it (make deps-debian): %v", name, err)
	}
	t.Skipf("%s not found (make test installs it): %v", name, err)
	return ""
}

// daemonBinary returns the path of the built fsmon_exporter binary:
// $FSMON_BINARY, set by `make test`.
func daemonBinary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("FSMON_BINARY")
	if p == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("FSMON_BINARY is not set; run the tests through `make test`")
		}
		t.Skip("FSMON_BINARY is not set: run through `make test` (or `make build` and FSMON_BINARY=$PWD/fsmon_exporter)")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("FSMON_BINARY=%s: %v", p, err)
	}
	return p
}

// repoRoot is the root of the fsmon_exporter repository, two levels above
// this package.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	root, err := filepath.Abs(filepath.Join(filepath.Dir(file), "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// repoPath is a path inside the repository.
func repoPath(t testing.TB, elem ...string) string {
	t.Helper()
	return filepath.Join(append([]string{repoRoot(t)}, elem...)...)
}
