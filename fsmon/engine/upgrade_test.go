package engine

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/allowstate"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
	"github.com/fsmon/fsmon_exporter/testutil/stepper"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// newBuild writes a new build of the program src to dst, as a package
// upgrade does: a new file (a new inode, other content: src with a tag
// appended, which the ELF loader ignores) renamed over the old one.
func newBuild(t *testing.T, src, dst, tag string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst+".new", append(b, tag...), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".new", dst); err != nil {
		t.Fatal(err)
	}
}

func inode(t *testing.T, p string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// reader is a shell running prog that opens secret at each line it is
// sent and says whether it could.
const readerScript = `while read x; do if : < "$0"; then echo open-ok; else echo open-denied; fi; done`

// TestUpgradeKeepsRunningProcessesAllowed: an allowed program (a copy
// of dash, on an ext4 of the test's own) keeps running while a new build
// is renamed over its path. The new build is allowed at its first open,
// with the engine's clock stopped (so not by the periodic look-up); the
// old process stays allowed; a program the list does not name is still
// denied; and once the old process has exited, a file that got its
// inode number (ext4 gives it to the next new file) is denied although
// its (device, inode) is the former resolution's.
func TestUpgradeKeepsRunningProcessesAllowed(t *testing.T) {
	dash := testroot.RequireCommand(t, "dash")
	dir := freshExt4(t)
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s\n")
	prog := filepath.Join(dir, "prog")
	newBuild(t, dash, prog, "build-1")
	h := start(t, blockFile("protect", secret, prog))
	h.allowIDs.fakeNow.Store(time.Now().UnixNano()) // the clock stands still

	old := stepper.Start(t, prog, "-c", readerScript, secret)
	old.Send(t, "1")
	old.Expect(t, "open-ok")
	oldIno := inode(t, "/proc/"+itoa(old.PID())+"/exe")

	newBuild(t, dash, prog, "build-2")
	if inode(t, prog) == oldIno {
		t.Fatal("the new build has the old inode: the test shows nothing")
	}
	if r := cmd(t, prog, "-c", `: < "$0" && echo read`, secret); r.err != nil || r.out != "read\n" {
		t.Fatalf("the new build was not allowed at its first open: %v: %s", r.err, r.out)
	}
	old.Send(t, "2")
	old.Expect(t, "open-ok") // the old build, still running, still allowed
	mustDeny(t, cmd(t, dash, "-c", `: < "$0"`, secret))

	// The old process ends; its inode is freed, and the next new file
	// gets its number.
	old.Cmd.Process.Kill()
	old.Cmd.Wait()
	impostor := impostorAt(t, dir, dash, oldIno)
	r := cmd(t, impostor, "-c", `: < "$0" && echo read`, secret)
	if r.err == nil {
		t.Fatalf("a program that merely got the old build's inode number read the file: %s", r.out)
	}
	mustDeny(t, r)
	// The new build is still the entry's.
	mustAllow(t, cmd(t, prog, "-c", `: < "$0"`, secret))
}

// impostorAt writes a copy of dash as a new file in dir, which must get
// the freed inode number oldIno (ext4 gives it to the next new file), or
// the test shows nothing.
func impostorAt(t *testing.T, dir, dash string, oldIno uint64) string {
	t.Helper()
	impostor := filepath.Join(dir, "impostor")
	b, err := os.ReadFile(dash)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(impostor, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if inode(t, impostor) != oldIno {
		t.Fatalf("the new file got inode %d, not the freed %d: the test shows nothing", inode(t, impostor), oldIno)
	}
	return impostor
}

func itoa(pid int32) string { return string(appendInt(nil, int64(pid))) }

func appendInt(b []byte, n int64) []byte {
	if n >= 10 {
		b = appendInt(b, n/10)
	}
	return append(b, byte('0'+n%10))
}

// TestSweepDropsGoneFormerResolutions: of an entry's former
// resolutions, the sweep keeps the inodes that still exist and drops
// those that are gone (ESTALE), whose numbers may be another file's.
func TestSweepDropsGoneFormerResolutions(t *testing.T) {
	dir := freshExt4(t)
	h := start(t, blockFile("protect", filepath.Join(dir, "secret"), "/usr/bin/true"))
	res := func(p string) resolution {
		t.Helper()
		fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		hd, err := proc.HandleOf(fd)
		if err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil {
			t.Fatal(err)
		}
		return resolution{id: devIno{st.Dev, st.Ino}, handle: hd}
	}
	gone, kept, entry := filepath.Join(dir, "gone"), filepath.Join(dir, "kept"), filepath.Join(dir, "prog")
	for _, p := range []string{gone, kept, entry} {
		writeFile(t, p, "x")
	}
	x := &allowEntry{cur: res(entry), former: []resolution{res(gone), res(kept)}}
	if err := os.Remove(gone); err != nil {
		t.Fatal(err)
	}
	a := allowIDs{m: map[allowKey]*allowEntry{{h.host, entry}: x}}
	a.sweep(h.Engine)
	if len(x.former) != 1 || x.former[0] != res(kept) {
		t.Fatalf("after the sweep %d former resolutions, want only the one that exists", len(x.former))
	}
}

// TestReusedInodeOfTheCurrentResolutionIsDenied: the entry resolved to
// a binary that no process runs any more; a new build is renamed over
// it, and a new file gets the freed inode number before anything looks
// the entry up again (the engine's clock stands still, and the new
// file's path is not the entry's). Its (device, inode) is the one the
// entry last resolved to, but not its file handle: denied.
func TestReusedInodeOfTheCurrentResolutionIsDenied(t *testing.T) {
	dash := testroot.RequireCommand(t, "dash")
	dir := freshExt4(t)
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s\n")
	prog := filepath.Join(dir, "prog")
	newBuild(t, dash, prog, "build-1")
	h := start(t, blockFile("protect", secret, prog))
	h.allowIDs.fakeNow.Store(time.Now().UnixNano())
	mustAllow(t, cmd(t, prog, "-c", `: < "$0"`, secret)) // resolved to build-1
	oldIno := inode(t, prog)

	newBuild(t, dash, prog, "build-2") // build-1's inode is freed
	impostor := impostorAt(t, dir, dash, oldIno)
	r := cmd(t, impostor, "-c", `: < "$0" && echo read`, secret)
	if r.err == nil {
		t.Fatalf("a program that got the inode number the entry last resolved to read the file: %s", r.out)
	}
	mustDeny(t, r)
	mustAllow(t, cmd(t, prog, "-c", `: < "$0"`, secret))
}

// upgradeUnderRunningProcess starts a reader running build 1 of an
// allowed program on an ext4 of the test's own and lets it open secret
// once, then renames build 2 over the program's path. It returns the
// reader, the program's path, the secret and the directory.
func upgradeUnderRunningProcess(t *testing.T, dash, dir string, h func(prog, secret string) *harness) (old *stepper.Stepper, prog, secret string, hh *harness) {
	t.Helper()
	secret = filepath.Join(dir, "secret")
	writeFile(t, secret, "s\n")
	prog = filepath.Join(dir, "prog")
	newBuild(t, dash, prog, "build-1")
	hh = h(prog, secret)
	old = stepper.Start(t, prog, "-c", readerScript, secret)
	old.Send(t, "1")
	old.Expect(t, "open-ok")
	return old, prog, secret, hh
}

// TestReloadKeepsTheOldBuildAllowed: a reload (and so the end of any
// container, which starts the allow cache over as well) does not forget
// the previous build of an upgraded program: its running process stays
// allowed.
func TestReloadKeepsTheOldBuildAllowed(t *testing.T) {
	dash := testroot.RequireCommand(t, "dash")
	dir := freshExt4(t)
	old, prog, secret, h := upgradeUnderRunningProcess(t, dash, dir, func(prog, secret string) *harness {
		h := start(t, blockFile("protect", secret, prog))
		h.allowIDs.fakeNow.Store(time.Now().UnixNano())
		return h
	})
	newBuild(t, dash, prog, "build-2")
	mustAllow(t, cmd(t, prog, "-c", `: < "$0"`, secret)) // the new build, at its first open
	gen := h.allowGen.Load()
	if _, err := h.Apply(compile(t, blockFile("protect", secret, prog))); err != nil {
		t.Fatal(err)
	}
	if h.allowGen.Load() == gen {
		t.Fatal("the reload did not start a new generation of the allow cache: the test shows nothing")
	}
	old.Send(t, "2")
	old.Expect(t, "open-ok")
	mustDeny(t, cmd(t, dash, "-c", `: < "$0"`, secret))
	mustAllow(t, cmd(t, prog, "-c", `: < "$0"`, secret))
}

// TestRestartKeepsTheOldBuildAllowed: the daemon stops, the program is
// upgraded while it is down, and the daemon starts again. The process
// of the old build, which the new daemon never saw the path name, stays
// allowed through the state the first daemon kept; the new build is
// allowed; other programs are denied; and a file that gets the old
// build's inode number after it exits is denied (the record's handle is
// the old file's).
func TestRestartKeepsTheOldBuildAllowed(t *testing.T) {
	dash := testroot.RequireCommand(t, "dash")
	dir := freshExt4(t)
	state := filepath.Join(t.TempDir(), "state")
	withState := func(o *Options) { o.StateDir = state }
	old, prog, secret, h1 := upgradeUnderRunningProcess(t, dash, dir, func(prog, secret string) *harness {
		return start(t, blockFile("protect", secret, prog), withState)
	})
	oldIno := inode(t, "/proc/"+itoa(old.PID())+"/exe")
	h1.stop()

	newBuild(t, dash, prog, "build-2") // while the daemon is down
	h2 := start(t, blockFile("protect", secret, prog), withState)
	h2.allowIDs.fakeNow.Store(time.Now().UnixNano())
	old.Send(t, "2")
	old.Expect(t, "open-ok")
	mustAllow(t, cmd(t, prog, "-c", `: < "$0"`, secret))
	mustDeny(t, cmd(t, dash, "-c", `: < "$0"`, secret))

	old.Cmd.Process.Kill()
	old.Cmd.Wait()
	impostor := impostorAt(t, dir, dash, oldIno)
	mustDeny(t, cmd(t, impostor, "-c", `: < "$0"`, secret))
}

// TestUnreadableStateIsSetAside: a state file that cannot be parsed
// does not stop the engine; it is kept as FILE.bad, and a fresh one is
// written.
func TestUnreadableStateIsSetAside(t *testing.T) {
	state := t.TempDir()
	p := filepath.Join(state, allowstate.FileName)
	writeFile(t, p, "{not json")
	secret := filepath.Join(t.TempDir(), "secret")
	writeFile(t, secret, "s")
	h := start(t, blockFile("protect", secret, "/usr/bin/head"), func(o *Options) { o.StateDir = state })
	mustAllow(t, cmd(t, "head", secret)) // resolves the entry: a record to write
	h.stop()
	if b, err := os.ReadFile(p + ".bad"); err != nil || string(b) != "{not json" {
		t.Fatalf("the unreadable state was not kept: %q, %v", b, err)
	}
	st, err := allowstate.Load(state)
	if err != nil || len(st["/usr/bin/head"]) == 0 {
		t.Fatalf("fresh state: %v, %v; want a record of /usr/bin/head", st, err)
	}
}
