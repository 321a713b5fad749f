package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// copyExe copies the program src to dst as a new file (a new inode),
// then renames it into place, as a package upgrade does.
func copyExe(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+".new", b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".new", dst); err != nil {
		t.Fatal(err)
	}
}

// TestUpgradedAllowedBinaryIsAllowedAgain: an allow entry is matched by
// the inode its path names. When the entry is a symlink that is pointed
// at another file (no rename of the entry's path itself, and the new
// process's /proc/PID/exe names the new target, neither the entry nor
// its old target), only the periodic look-up finds the change: entries
// are looked up again when an executable matches none of them, at most
// every allowRecheck. The new target is denied until that much time has
// passed since the last look-up, and allowed after. The engine's clock
// for this is the test's (allowIDs.fakeNow), so nothing waits for time.
// (A binary renamed over the entry's path is allowed at once:
// TestUpgradeKeepsRunningProcessesAllowed.)
func TestUpgradedAllowedBinaryIsAllowedAgain(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s\n")
	a, b := filepath.Join(dir, "cat-a"), filepath.Join(dir, "cat-b")
	copyExe(t, "/usr/bin/cat", a)
	copyExe(t, "/usr/bin/cat", b)
	link := filepath.Join(dir, "cat")
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	h := start(t, blockFile("protect", secret, link))
	t0 := time.Now().UnixNano()
	h.allowIDs.fakeNow.Store(t0)

	mustAllow(t, cmd(t, link, secret)) // the entry is looked up at t0
	// The entry now names cat-b.
	if err := os.Symlink(b, link+".new"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link+".new", link); err != nil {
		t.Fatal(err)
	}
	r := cmd(t, link, secret)
	if r.err == nil {
		t.Fatal("the entries were looked up again within allowRecheck of the last look-up: a process outside the list would make every open walk them")
	}
	mustDeny(t, r)
	h.allowIDs.fakeNow.Store(t0 + int64(allowRecheck))
	if r := cmd(t, link, secret); r.err != nil {
		t.Fatalf("the new target, allowRecheck after the last look-up, was not allowed: %v: %s", r.err, r.out)
	}
	// It stays allowed without a look-up (its inode is the known one),
	// and a binary the list does not name is still denied.
	mustAllow(t, cmd(t, link, secret))
	h.allowIDs.fakeNow.Store(t0 + 2*int64(allowRecheck))
	mustDeny(t, cmd(t, "/usr/bin/cat", secret))
}

// TestScriptIsJudgedAsItsInterpreter: a process that runs a script is
// its interpreter (/proc/PID/exe is /usr/bin/dash), so an allow entry
// naming the script lets nothing in, and one naming the interpreter lets
// the script in. The script's process name is its file name, so a path
// entry must not match by name either.
func TestScriptIsJudgedAsItsInterpreter(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "reader.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n: < \"$1\" && echo read\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	byScript := filepath.Join(dir, "by-script")
	byShell := filepath.Join(dir, "by-shell")
	writeFile(t, byScript, "s\n")
	writeFile(t, byShell, "s\n")
	h := start(t, fmt.Sprintf(`
profiles:
  - name: t
    host: true
    mode: protect
    filters:
      - name: by-script
        path: %s
        behavior: block
        allow: [%s]
      - name: by-shell
        path: %s
        behavior: block
        allow: [/bin/sh]
`, byScript, script, byShell))

	mustDeny(t, cmd(t, script, byScript))
	ev := h.rec.waitFor(t, "the script denied", kind(fsmon.KindDenied, byScript))
	if p := ev.Process; p.ExecutablePath != "/usr/bin/dash" || p.ExecutableName != "reader.sh" || p.CommandLine != "/bin/sh "+script+" "+byScript {
		t.Errorf("the denied script's process: %+v, want /usr/bin/dash named reader.sh running %s", p, script)
	}
	if r := cmd(t, script, byShell); r.err != nil || r.out != "read\n" {
		t.Fatalf("the script, its interpreter allowed, was not let in: %v: %s", r.err, r.out)
	}
}
