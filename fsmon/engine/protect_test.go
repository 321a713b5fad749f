package engine

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/learnstate"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// protectFile is a config that protects one file, allowing head (by
// path) and tail (by name).
func protectFile(mode, p string) string {
	return blockFile(mode, p, "/usr/bin/head", "tail")
}

// blockFile is a config with one block filter, "secret", on the file p,
// which the allow entries may open.
func blockFile(mode, p string, allow ...string) string {
	return fmt.Sprintf(`
profiles:
  - name: t
    host: true
    mode: %s
    filters:
      - name: secret
        path: %s
        behavior: block
        allow: [%s]
`, mode, p, strings.Join(allow, ", "))
}

func protectDir(mode, dir string, recursive bool) string {
	return fmt.Sprintf(`
profiles:
  - name: t
    host: true
    mode: %s
    filters:
      - name: keys
        path: %s
        regex: '.*\.key'
        recursive: %v
        behavior: block
        allow: [/usr/bin/head]
`, mode, dir, recursive)
}

func TestProtectDeniesReadWriteCreate(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s3cret\n")
	h := start(t, protectFile("protect", secret))

	mustDeny(t, cmd(t, "cat", secret))
	ev := h.rec.waitFor(t, "denied cat", kind(fsmon.KindDenied, secret))
	if ev.Op != fsmon.OpOpen || ev.Mode != fsmon.ModeProtect || ev.Profile != "t" || ev.Filter != "secret" {
		t.Errorf("event fields: %+v", ev)
	}
	p := ev.Process
	if p.PID <= 0 || p.ParentPID != int32(os.Getpid()) || p.ExecutablePath != "/usr/bin/cat" ||
		p.ExecutableName != "cat" || p.CommandLine != "cat "+secret || p.UserID != 0 {
		t.Errorf("process facts: %+v (test pid %d)", p, os.Getpid())
	}
	if ev.Decision <= 0 || ev.Count != 1 || ev.Time.IsZero() {
		t.Errorf("decision %v count %d time %v", ev.Decision, ev.Count, ev.Time)
	}

	mustDeny(t, sh(t, "echo x >> "+secret))
	mustDeny(t, cmd(t, "cp", "/etc/hostname", secret))
	if b, _ := os.ReadFile(secret); string(b) != "s3cret\n" {
		t.Fatalf("content changed to %q", b)
	}

	// Creating a file under a protected directory fails alike.
	h2dir := t.TempDir()
	h2 := start(t, protectDir("protect", h2dir, false))
	mustDeny(t, sh(t, "echo new > "+filepath.Join(h2dir, "new.key")))
	h2.rec.waitFor(t, "denied create", kind(fsmon.KindDenied, filepath.Join(h2dir, "new.key")))
	// A name the regex does not match is not touched.
	mustAllow(t, sh(t, "echo ok > "+filepath.Join(h2dir, "notes.txt")+" && cat "+filepath.Join(h2dir, "notes.txt")))
}

func TestProtectAllowList(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s3cret\n")
	h := start(t, protectFile("protect", secret))
	r := cmd(t, "head", secret)
	mustAllow(t, r)
	if r.out != "s3cret\n" {
		t.Fatalf("head read %q", r.out)
	}
	mustAllow(t, cmd(t, "tail", secret)) // allowed by name
	// The daemon's own opens never wait and are not reported.
	if b, err := os.ReadFile(secret); err != nil || string(b) != "s3cret\n" {
		t.Fatalf("own read: %q %v", b, err)
	}
	// cat is on neither list: its open is decided after those above, so
	// its report is queued after any report of theirs.
	pid, r := decRun(t, "cat", secret)
	mustDeny(t, r)
	h.rec.noneBefore(t, "for allowed processes", func(ev *fsmon.Event) bool { return ev.Kind != fsmon.KindChange },
		"cat's denied open", byPID(pid))
}

func TestMonitorModeReportsViolation(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s3cret\n")
	h := start(t, protectFile("monitor", secret))
	pid, r := decRun(t, "cat", secret)
	mustAllow(t, r)
	ev := h.rec.waitFor(t, "violation", byPID(pid))
	if ev.Kind != fsmon.KindViolation || ev.Path != secret || ev.Mode != fsmon.ModeMonitor || ev.Process.ExecutableName != "cat" {
		t.Errorf("%+v", ev)
	}
	// A second open, decided after the first: one report of the first,
	// and nothing denied, by then.
	pid2, r := decRun(t, "cat", secret)
	mustAllow(t, r)
	h.rec.noneBefore(t, "denied in monitor mode", func(e *fsmon.Event) bool { return e.Kind == fsmon.KindDenied },
		"the second open's violation", byPID(pid2))
	n := 0
	for _, e := range h.rec.all() {
		if byPID(pid)(&e) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d reports of the first open, want 1: %s", n, dump(h.rec.all()))
	}
}

func TestLearnModeRecords(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s3cret\n")
	h := start(t, protectFile("learn", secret))
	mustAllow(t, cmd(t, "cat", secret))
	h.rec.waitFor(t, "learned", kind(fsmon.KindLearned, secret))
	want := learnstate.Key{Profile: "t", Filter: "secret", Executable: "/usr/bin/cat"}
	found := false
	for _, l := range h.LearnedSet() {
		if l.Key() == want {
			found = true
		}
	}
	if !found {
		t.Fatalf("learned set %v lacks %v", h.LearnedSet(), want)
	}
}

// TestProtectionFollowsTheFile covers the ways real programs reach or
// rewrite a protected file.
func TestProtectionFollowsTheFile(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir() // same file system, not marked
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s3cret\n")
	h := start(t, protectFile("protect", secret))

	t.Run("hard link", func(t *testing.T) {
		link := filepath.Join(other, "hardlink")
		mustAllow(t, cmd(t, "ln", secret, link))
		mustDeny(t, cmd(t, "cat", link))
		ev := h.rec.waitFor(t, "denied via hard link", kind(fsmon.KindDenied, link))
		if ev.Filter != "secret" {
			t.Errorf("%+v", ev)
		}
		os.Remove(link)
	})
	t.Run("symlink", func(t *testing.T) {
		link := filepath.Join(other, "symlink")
		mustAllow(t, cmd(t, "ln", "-s", secret, link))
		mustDeny(t, cmd(t, "cat", link))
		os.Remove(link)
	})
	t.Run("proc root path", func(t *testing.T) {
		mustDeny(t, cmd(t, "cat", "/proc/self/root"+secret))
	})
	t.Run("bind mount", func(t *testing.T) {
		mnt := filepath.Join(other, "mnt")
		os.Mkdir(mnt, 0o755)
		mustAllow(t, cmd(t, "mount", "--bind", dir, mnt))
		defer exec.Command("umount", "-l", mnt).Run()
		mustDeny(t, cmd(t, "cat", filepath.Join(mnt, "secret")))
	})
	t.Run("atomic replacement by an allowed editor", func(t *testing.T) {
		// Write a temporary file and rename it over the protected one,
		// as editors and sed -i do: a new inode under the old name.
		mustAllow(t, sh(t, fmt.Sprintf("head %s > %s.tmp && echo more >> %s.tmp && mv %s.tmp %s", secret, secret, secret, secret, secret)))
		mustDeny(t, cmd(t, "cat", secret))
		mustAllow(t, cmd(t, "head", secret))
	})
	t.Run("sed -i", func(t *testing.T) {
		// sed is not allowed: it cannot read the file to rewrite it.
		mustDeny(t, cmd(t, "sed", "-i", "s/s3cret/leaked/", secret))
	})
	t.Run("renamed away", func(t *testing.T) {
		moved := filepath.Join(other, "moved")
		mustAllow(t, cmd(t, "mv", secret, moved))
		mustDeny(t, cmd(t, "cat", moved))
		// Creating a file at the old name is an open like any other:
		// denied to others.
		mustDeny(t, sh(t, "echo fresh > "+secret))
		// Made by the daemon's own process, it is covered as well.
		writeFile(t, secret, "fresh\n")
		mustDeny(t, cmd(t, "cat", secret))
		mustAllow(t, cmd(t, "mv", moved, secret+".old"))
	})
	t.Run("copy made by an allowed process is a new file", func(t *testing.T) {
		// The copy is a different file outside the filter: the filter
		// protects the name and its inode, not the bytes.
		cp := filepath.Join(other, "copy")
		mustAllow(t, sh(t, "head "+secret+" > "+cp))
		mustAllow(t, cmd(t, "cat", cp))
	})
	t.Run("deleted and recreated", func(t *testing.T) {
		mustAllow(t, cmd(t, "rm", "-f", secret))
		writeFile(t, secret, "again\n")
		mustDeny(t, cmd(t, "cat", secret))
	})
	t.Run("open through an fd path of another process", func(t *testing.T) {
		// A process holding the directory open cannot reach the file by
		// a relative path either.
		mustDeny(t, sh(t, "cd "+dir+" && exec cat ./secret"))
	})
}

func TestExecOfProtectedFile(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "tool")
	b, err := os.ReadFile("/usr/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"protect", "monitor"} {
		t.Run(mode, func(t *testing.T) {
			h := start(t, protectFile(mode, bin))
			want := fsmon.KindDenied
			// sh execs the file in its own process: the pid is known
			// also when the exec fails.
			pid, r := decRun(t, "sh", "-c", "exec "+bin)
			if mode == "protect" {
				mustDeny(t, r)
			} else {
				// Allowed, the exec makes a second permission event,
				// FAN_OPEN_PERM of the same file (a denied
				// FAN_OPEN_EXEC_PERM ends the exec before it).
				mustAllow(t, r)
				want = fsmon.KindViolation
			}
			h.rec.waitFor(t, "reported exec", func(ev *fsmon.Event) bool {
				return byPID(pid)(ev) && ev.Kind == want && ev.Path == bin && ev.Op == fsmon.OpExec
			})
			// The second permission event is not a second report: an open
			// by another process, decided after it, is reported after any
			// second report would have been.
			pid2, _ := decRun(t, "cat", bin)
			h.rec.noneBefore(t, "a second report of the exec", func(ev *fsmon.Event) bool {
				return byPID(pid)(ev) && ev.Op != fsmon.OpExec
			}, "a later open's report", byPID(pid2))
		})
	}
}

func TestRecursiveCoversNewSubdirectories(t *testing.T) {
	dir := t.TempDir()
	h := start(t, protectDir("protect", dir, true))
	// Created after start by the daemon's own process (allowed), two
	// levels deep at once.
	deep := filepath.Join(dir, "a", "b", "c")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(deep, "id.key")
	writeFile(t, key, "k")
	eventually(t, "deny in a new subdirectory", func() error { return denied(key) })
	h.rec.waitFor(t, "denied deep", kind(fsmon.KindDenied, key))
	// A directory renamed in from outside is covered too.
	outside := t.TempDir()
	writeFile(t, filepath.Join(outside, "x.key"), "k")
	moved := filepath.Join(dir, "moved")
	if err := os.Rename(outside, moved); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deny in a directory moved in", func() error { return denied(filepath.Join(moved, "x.key")) })
	// Names the regex does not match stay open.
	writeFile(t, filepath.Join(deep, "readme"), "r")
	mustAllow(t, cmd(t, "cat", filepath.Join(deep, "readme")))
}

func TestNonRecursiveLeavesSubdirectories(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	writeFile(t, filepath.Join(sub, "x.key"), "k")
	writeFile(t, filepath.Join(dir, "y.key"), "k")
	start(t, protectDir("protect", dir, false))
	mustDeny(t, cmd(t, "cat", filepath.Join(dir, "y.key")))
	mustAllow(t, cmd(t, "cat", filepath.Join(sub, "x.key")))
}

func TestRegexPath(t *testing.T) {
	base := t.TempDir()
	for _, u := range []string{"alice", "bob"} {
		os.MkdirAll(filepath.Join(base, u, ".ssh"), 0o700)
		writeFile(t, filepath.Join(base, u, ".ssh", "id_ed25519"), "k")
	}
	start(t, fmt.Sprintf(`
profiles:
  - name: t
    host: true
    mode: protect
    filters:
      - name: ssh
        path: %s/.*/\.ssh
        regex: '.*'
        behavior: block
        allow: [/usr/bin/head]
`, base))
	mustDeny(t, cmd(t, "cat", filepath.Join(base, "alice", ".ssh", "id_ed25519")))
	mustDeny(t, cmd(t, "cat", filepath.Join(base, "bob", ".ssh", "id_ed25519")))
	// A user added later.
	os.MkdirAll(filepath.Join(base, "carol", ".ssh"), 0o700)
	writeFile(t, filepath.Join(base, "carol", ".ssh", "id_rsa"), "k")
	eventually(t, "new user's key", func() error { return denied(filepath.Join(base, "carol", ".ssh", "id_rsa")) })
	writeFile(t, filepath.Join(base, "carol", "notes"), "n")
	mustAllow(t, cmd(t, "cat", filepath.Join(base, "carol", "notes")))
}

func TestChangesAreReported(t *testing.T) {
	dir := t.TempDir()
	watched := filepath.Join(dir, "hosts")
	writeFile(t, watched, "127.0.0.1 localhost\n")
	h := start(t, fmt.Sprintf(`
profiles:
  - name: t
    host: true
    filters:
      - path: %s
      - name: conf
        path: %s/conf.d
        regex: '.*\.conf'
`, watched, dir))
	// Change events are read after the fact: a writer that is still
	// there is named in full (one that has exited by then is named by
	// its pid only).
	// The writer stays until its event is seen.
	writer := exec.Command("sh", "-c", "echo '10.0.0.1 x' >> "+watched+" && { read x || :; }")
	hold, err := writer.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := writer.Start(); err != nil {
		t.Fatal(err)
	}
	ev := h.rec.waitFor(t, "write", change(fsmon.OpWrite, watched))
	hold.Close()
	if err := writer.Wait(); err != nil {
		t.Fatalf("writer: %v", err)
	}
	if ev.Process.ExecutableName != "sh" || ev.Process.ExecutablePath != "/usr/bin/dash" || ev.Process.PID <= 0 ||
		ev.Process.CommandLine == "" || ev.Filter != watched || ev.Mode != fsmon.ModeMonitor {
		t.Errorf("write event: %+v", ev)
	}
	// A write through a hard link outside the directory is still the
	// file's change.
	other := t.TempDir()
	link := filepath.Join(other, "link")
	mustAllow(t, cmd(t, "ln", watched, link))
	mustAllow(t, sh(t, "echo y >> "+link))
	ev = h.rec.waitFor(t, "write via link", change(fsmon.OpWrite, link))
	if ev.Filter != watched {
		t.Errorf("%+v", ev)
	}
	os.Remove(link)
	mustAllow(t, cmd(t, "chmod", "600", watched))
	// chmod has often exited before its event is read: only its pid is
	// sure to be known.
	ev = h.rec.waitFor(t, "attrib", change(fsmon.OpAttrib, watched))
	if ev.Process.PID <= 0 {
		t.Errorf("attrib by %+v", ev.Process)
	}
	// Atomic replacement shows as a rename onto the name.
	mustAllow(t, sh(t, fmt.Sprintf("cp %s %s.new && mv %s.new %s", watched, watched, watched, watched)))
	ev = h.rec.waitFor(t, "rename", change(fsmon.OpRename, watched))
	if ev.Process.PID <= 0 {
		t.Errorf("rename by %+v", ev.Process)
	}
	mustAllow(t, cmd(t, "rm", watched))
	h.rec.waitFor(t, "delete", change(fsmon.OpDelete, watched))
	mustAllow(t, cmd(t, "touch", watched))
	ev = h.rec.waitFor(t, "create", change(fsmon.OpCreate, watched))
	if ev.Process.PID <= 0 {
		t.Errorf("create by %+v", ev.Process)
	}
	// Files in a directory created after start, once the engine has
	// marked it (inotify reports it; a file made before then may go
	// unreported, as the README says).
	conf := filepath.Join(dir, "conf.d")
	mustAllow(t, cmd(t, "mkdir", conf))
	eventually(t, "conf.d marked", func() error {
		if d := decDir(t, h, conf); d == nil || d.Notif == 0 {
			return fmt.Errorf("conf.d has no notification mark")
		}
		return nil
	})
	f := filepath.Join(conf, "a.conf")
	mustAllow(t, sh(t, "echo x > "+f))
	h.rec.waitFor(t, "create in the new conf.d", change(fsmon.OpCreate, f))
}

func TestEventsOfDifferentProcessesAreNotMerged(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s")
	h := start(t, protectFile("protect", secret))
	const n = 8
	script := strings.Repeat("cat "+secret+" 2>/dev/null & ", n) + "wait"
	sh(t, script)
	eventually(t, "a report of each process", func() error {
		pids := map[int32]bool{}
		for _, ev := range h.rec.all() {
			if ev.Kind == fsmon.KindDenied {
				pids[ev.Process.PID] = true
			}
		}
		if len(pids) != n {
			return fmt.Errorf("want %d denied events of %d processes, got pids %v", n, n, pids)
		}
		return nil
	})
}

// TestSymlinkCannotAimAFilter: a user who may create links in a covered
// directory must not be able to point a block filter at another file.
func TestSymlinkCannotAimAFilter(t *testing.T) {
	// Not t.TempDir: its parent is closed to other users.
	base, err := os.MkdirTemp("", "fsmon-symlink-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	ssh := filepath.Join(base, "home", ".ssh")
	os.MkdirAll(ssh, 0o755)
	os.Chown(ssh, 65534, 65534)
	victim := filepath.Join(base, "victim")
	writeFile(t, victim, "public\n")
	os.Symlink(victim, filepath.Join(ssh, "id_before")) // root's own link, made before start, in a regex-covered dir
	h := start(t, fmt.Sprintf(`
profiles:
  - name: t
    host: true
    mode: protect
    filters:
      - name: keys
        path: %s
        regex: 'id_.*'
        behavior: block
        allow: [/usr/bin/ssh]
      - name: authorized
        path: %s/authorized_keys
        behavior: block
        allow: [/usr/bin/ssh]
`, ssh, ssh))
	// The user links a name the regex covers, and the name the
	// configuration spells out, to the victim.
	for _, name := range []string{"id_evil", "authorized_keys"} {
		ln := exec.Command("ln", "-s", victim, filepath.Join(ssh, name))
		ln.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		if out, err := ln.CombinedOutput(); err != nil {
			t.Fatalf("ln as nobody: %v %s", err, out)
		}
	}
	// A real key made after the links: inotify reports the directory's
	// entries in order, so once the key has marks of its own (which only
	// the handling of its creation gives it: the daemon's own open is
	// never decided), the links have been handled too.
	real := filepath.Join(ssh, "id_real")
	writeFile(t, real, "k")
	eventually(t, "the real key marked", func() error {
		if decFile(t, h, real) == nil {
			return fmt.Errorf("id_real not tracked")
		}
		return nil
	})
	mustAllow(t, cmd(t, "cat", victim))
	if fe := decFile(t, h, victim); fe != nil {
		t.Fatalf("the victim is tracked through a link, as %s", fe.Path)
	}
	// The real key in the directory is protected as ever.
	mustDeny(t, cmd(t, "cat", real))
}

// TestAllowListIsByIdentityNotPathText: /proc/PID/exe shows a path in
// the opener's own mount namespace, which it can arrange: another
// program bind-mounted over the allowed path is still another program.
func TestAllowListIsByIdentityNotPathText(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s3cret\n")
	evil := filepath.Join(dir, "evil")
	b, err := os.ReadFile("/usr/bin/cat")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(evil, b, 0o755); err != nil {
		t.Fatal(err)
	}
	start(t, protectFile("protect", secret)) // allows /usr/bin/head
	mustAllow(t, cmd(t, "head", secret))
	mustDeny(t, cmd(t, "unshare", "--mount", "sh", "-c", "mount --bind "+evil+" /usr/bin/head && exec /usr/bin/head "+secret))
}

// TestRenamedSubdirectoryStaysCovered: a subdirectory renamed within a
// recursive filter keeps its marks under its new name, for new files and
// its own subdirectories too.
func TestRenamedSubdirectoryStaysCovered(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a", "sub"), 0o755)
	writeFile(t, filepath.Join(dir, "a", "old.key"), "k")
	h := start(t, protectDir("protect", dir, true))
	if err := os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	mustDeny(t, cmd(t, "cat", filepath.Join(dir, "b", "old.key")))
	writeFile(t, filepath.Join(dir, "b", "new.key"), "k")
	writeFile(t, filepath.Join(dir, "b", "sub", "x.key"), "k")
	// Inotify reports the move asynchronously; once it has, both stay
	// denied (before the fix they became readable for good).
	eventually(t, "new file in the renamed directory", func() error { return denied(filepath.Join(dir, "b", "new.key")) })
	eventually(t, "file in a subdirectory of it", func() error { return denied(filepath.Join(dir, "b", "sub", "x.key")) })
	// A directory made in b after the rename: its watch reports the
	// creation after the rename's own report (IN_MOVE_SELF), so once the
	// new directory is tracked, the move has been handled.
	marker := filepath.Join(dir, "b", "later")
	if err := os.Mkdir(marker, 0o755); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the directory made after the rename tracked", func() error {
		if decDir(t, h, marker) == nil {
			return fmt.Errorf("%s not tracked", marker)
		}
		return nil
	})
	if d := decDir(t, h, filepath.Join(dir, "b")); d == nil || d.Path != filepath.Join(dir, "b") {
		t.Fatalf("the renamed directory's entry: %+v", d)
	}
	mustDeny(t, cmd(t, "cat", filepath.Join(dir, "b", "new.key")))
	writeFile(t, filepath.Join(marker, "z.key"), "k")
	mustDeny(t, cmd(t, "cat", filepath.Join(marker, "z.key")))
}

// TestOverlayChangesAreReported: container roots are overlayfs, whose
// file handles can only be had for comparison; changes there are
// reported all the same.
func TestOverlayChangesAreReported(t *testing.T) {
	base := t.TempDir()
	for _, d := range []string{"lower/etc", "upper", "work", "merged"} {
		os.MkdirAll(filepath.Join(base, d), 0o755)
	}
	writeFile(t, filepath.Join(base, "lower", "etc", "hosts"), "127.0.0.1 localhost\n")
	merged := filepath.Join(base, "merged")
	opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work", base, base, base)
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", opts, merged).CombinedOutput(); err != nil {
		testroot.Unavailable(t, "no overlayfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", merged).Run() })
	hosts := filepath.Join(merged, "etc", "hosts")
	h := start(t, fmt.Sprintf(`
profiles:
  - name: t
    host: true
    filters:
      - path: %s
`, hosts))
	mustAllow(t, sh(t, "echo '10.0.0.9 x' >> "+hosts))
	h.rec.waitFor(t, "write on overlayfs", change(fsmon.OpWrite, hosts))
}

// TestRmRReportsEveryDelete: rm -r removes the files, then their
// directory; the directory's disappearance must not swallow the deletes
// read after it.
func TestRmRReportsEveryDelete(t *testing.T) {
	dir := t.TempDir()
	const trees = 12
	for i := 0; i < trees; i++ {
		deeper := filepath.Join(dir, fmt.Sprintf("e%d", i), "deep", "deeper")
		os.MkdirAll(deeper, 0o755)
		writeFile(t, filepath.Join(deeper, "z.txt"), "z")
		writeFile(t, filepath.Join(deeper, "..", "y.txt"), "y")
	}
	h := start(t, fmt.Sprintf(`
profiles:
  - name: t
    host: true
    filters:
      - path: %s
        recursive: true
`, dir))
	for i := 0; i < trees; i++ {
		mustAllow(t, cmd(t, "rm", "-r", filepath.Join(dir, fmt.Sprintf("e%d", i))))
	}
	want := map[string]bool{}
	for i := 0; i < trees; i++ {
		e := filepath.Join(dir, fmt.Sprintf("e%d", i))
		for _, p := range []string{e, e + "/deep", e + "/deep/y.txt", e + "/deep/deeper", e + "/deep/deeper/z.txt"} {
			want[p] = true
		}
	}
	eventually(t, "every delete reported", func() error {
		for _, ev := range h.rec.all() {
			if ev.Kind == fsmon.KindChange && ev.Op == fsmon.OpDelete {
				delete(want, ev.Path)
			}
		}
		if len(want) > 0 {
			return fmt.Errorf("%d deletes missing, e.g. %v", len(want), firstKey(want))
		}
		return nil
	})
}

func firstKey(m map[string]bool) string {
	for k := range m {
		return k
	}
	return ""
}

// TestInodeEventsNameTheFileWhereItIs: a link count change is an event
// of the inode alone; after a parent directory's rename it names the
// file where it is now, not where it was marked.
func TestInodeEventsNameTheFileWhereItIs(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "a"), 0o755)
	writeFile(t, filepath.Join(dir, "a", "f"), "x")
	h := start(t, fmt.Sprintf(`
profiles:
  - name: t
    host: true
    filters:
      - path: %s
        recursive: true
`, dir))
	if err := os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	mustAllow(t, cmd(t, "ln", filepath.Join(dir, "b", "f"), filepath.Join(other, "l")))
	// ln has often exited when the event is read: its pid is what is
	// sure. The path is one of the file's current names.
	ev := h.rec.waitFor(t, "attrib of the link count", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindChange && ev.Op == fsmon.OpAttrib && ev.Process.PID > 0
	})
	if ev.Path != filepath.Join(dir, "b", "f") && ev.Path != filepath.Join(other, "l") {
		t.Errorf("attrib names %s, not a current name of the file", ev.Path)
	}
	for _, ev := range h.rec.all() {
		if ev.Op == fsmon.OpAttrib && strings.Contains(ev.Path, "/a/") {
			t.Errorf("attrib names the old place: %+v", ev)
		}
	}
}
