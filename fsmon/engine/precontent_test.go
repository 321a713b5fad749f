package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/marks"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
)

// Content events (docs/design/deny.md §2, §3; content.go): the reads,
// writes, mmaps and truncates of a protect-mode block filter's file are
// judged whoever holds the descriptor.

// openedFD opens p in c and returns the descriptor's number.
func openedFD(t *testing.T, c contentProc, verb, p string) string {
	t.Helper()
	r := c.do(t, verb+" "+p)
	n, ok := strings.CutPrefix(r, "ok ")
	if !ok {
		t.Fatalf("%s %s: %q", verb, p, r)
	}
	return n
}

// eventsOf are the events of pid recorded so far.
func eventsOf(h *harness, pid int32) []fsmon.Event {
	var out []fsmon.Event
	for _, ev := range h.rec.all() {
		if ev.Process.PID == pid {
			out = append(out, ev)
		}
	}
	return out
}

// catDenied waits for the report of a denied open of p by cat: cat runs
// after everything the test made before, so every report of that is
// queued before this one (one FIFO queue).
func catDenied(t *testing.T, h *harness, p string) {
	t.Helper()
	mustDeny(t, cmd(t, "cat", p))
	h.rec.waitFor(t, "cat's denied open of "+p, func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Op == fsmon.OpOpen && ev.Path == p && filepath.Base(ev.Process.ExecutablePath) == "cat"
	})
}

// A descriptor that an allowed process opened after the mark, taken by
// an outsider with pidfd_getfd(2): the outsider's read, mmap, write and
// ftruncate get EPERM, truncate(2) by path too, and the reports name the
// process that made the call, once per process and file. The allowed
// reader still reads, from the cache after its first read, and its
// reads make no event.
func TestStolenDescriptorIsJudged(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "SECRET")
	h := start(t, blockFile("protect", secret, "fsmonholder"))
	holder := startContent(t, "fsmonholder")
	fd := openedFD(t, holder, "open", secret)
	holder.must(t, "pread", "ok SECR")
	hits := h.contentHits.Load()
	for i := 0; i < 3; i++ {
		holder.must(t, "pread", "ok SECR")
	}
	if h.exes.On() && h.contentHits.Load() < hits+3 {
		t.Errorf("the allowed reader's reads were not answered from memory: %d hits for 3 reads", h.contentHits.Load()-hits)
	}

	thief := startContent(t, "fsmonthief")
	thief.must(t, "steal "+strconv.Itoa(int(holder.PID()))+" "+fd, "ok")
	thief.must(t, "pread", "EPERM")
	thief.must(t, "mmap", "EPERM")
	thief.must(t, "sendfile", "EPERM")
	thief.must(t, "splice", "EPERM")
	thief.must(t, "copy "+filepath.Join(dir, "copied"), "EPERM")
	thief.must(t, "pwrite", "EPERM")
	thief.must(t, "ftruncate", "EPERM")
	truncator := startContent(t, "fsmontruncator")
	truncator.must(t, "truncate "+secret, "EPERM")

	holder.must(t, "pread", "ok SECR")
	if b, err := os.ReadFile(secret); err != nil || string(b) != "SECRET" {
		t.Fatalf("the file holds %q (%v)", b, err)
	}
	catDenied(t, h, secret)
	if evs := eventsOf(h, holder.PID()); len(evs) != 0 {
		t.Errorf("the allowed reader's open and reads were reported: %s", dump(evs))
	}
	evs := eventsOf(h, thief.PID())
	if len(evs) != 1 || evs[0].Kind != fsmon.KindDenied || evs[0].Op != fsmon.OpAccess || evs[0].Path != secret || evs[0].Filter != "secret" {
		t.Errorf("the thief's four denied calls: want one denied access of %s, got %s", secret, dump(evs))
	}
	evs = eventsOf(h, truncator.PID())
	if len(evs) != 1 || evs[0].Kind != fsmon.KindDenied || evs[0].Op != fsmon.OpTruncate || evs[0].Path != secret {
		t.Errorf("truncate(2) by path: want one denied truncate of %s, got %s", secret, dump(evs))
	}
}

// A program whose own file a block filter protects still runs for the
// process its allow list names: after its exec was judged, the program
// maps its own segments, which are content events of a process that
// runs the file itself. They are allowed and not reported.
func TestProtectedExecutableRuns(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "fsmonsleep")
	b, err := os.ReadFile("/usr/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	h := start(t, blockFile("protect", bin, "sh"))
	r := sh(t, bin+" 0 && echo ran")
	mustAllow(t, r)
	if !strings.Contains(r.out, "ran") {
		t.Fatalf("the protected program did not run: %q", r.out)
	}
	catDenied(t, h, bin)
	for _, ev := range h.rec.all() {
		if ev.Process.ExecutablePath == bin {
			t.Errorf("the program's reads of itself were reported: %s", dump([]fsmon.Event{ev}))
		}
	}
}

// A descriptor opened on an armed file system before the file it reads
// was covered (here: a file renamed into a covered name afterwards) is
// judged at its reads from the moment the file has its mark: the kernel
// decided at its open, when the file system was already armed, that it
// makes content events.
func TestDescriptorOpenedAfterArmingIsJudgedFromTheMark(t *testing.T) {
	dir := t.TempDir()
	h := start(t, newFileDir(dir))
	staged := filepath.Join(dir, "staged")
	writeFile(t, staged, "SECRET")
	thief := startContent(t, "fsmonthief")
	openedFD(t, thief, "open", staged)
	thief.must(t, "pread", "ok SECR") // not covered yet
	var st syscall.Stat_t
	if err := syscall.Stat(staged, &st); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "s.key")
	if err := os.Rename(staged, key); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the renamed file's own mark", func() error {
		if f, _ := h.marks.Entries(marks.DevIno{Dev: st.Dev, Ino: st.Ino}); f == nil || !f.Perm.Any(fanotify.PreAccess) {
			return fmt.Errorf("entry %+v", f)
		}
		return nil
	})
	thief.must(t, "pread", "EPERM")
	h.rec.waitFor(t, "the thief's denied read", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Process.PID == thief.PID() && ev.Op == fsmon.OpAccess && ev.Path == key
	})
}

// A new file gets its content guard before its creator's open is
// answered (marks.Adopt): the creator's descriptor, taken by an outsider
// while nothing else could mark the file (placement held), does not
// read for the outsider, and the creator writes and reads.
func TestNewFileDescriptorStolenFromItsCreatorIsJudged(t *testing.T) {
	dir := t.TempDir()
	h := start(t, newFileDir(dir))
	pl := h.marks.Place()
	defer pl.Done()
	creator := startContent(t, "sh") // allowed by name
	fd := openedFD(t, creator, "create", filepath.Join(dir, "new.key"))
	creator.must(t, "write SECRET", "ok")
	creator.must(t, "pread", "ok SECR")
	thief := startContent(t, "fsmonthief")
	thief.must(t, "steal "+strconv.Itoa(int(creator.PID()))+" "+fd, "ok")
	thief.must(t, "pread", "EPERM")
	thief.must(t, "mmap", "EPERM")
	creator.must(t, "pread", "ok SECR")
}

// Arming: one file system mark in the arming group (none in the others)
// for the file system of a protect-mode block filter's file; none once
// a reload leaves that filter in monitor mode, whose files get no
// content guard.
func TestArmingFollowsTheConfiguration(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	writeFile(t, secret, "s")
	h := start(t, blockFile("protect", secret, "cat"))
	if h.arm == nil {
		t.Fatal("no arming group")
	}
	if m := readKernelMarks(t, h.arm.FD()); m.filesystem != 1 || m.inode+m.mount != 0 {
		t.Fatalf("arming group marks %+v, want one file system mark", m)
	}
	if err := marksAgree(t, h); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(secret, &st); err != nil {
		t.Fatal(err)
	}
	id := marks.DevIno{Dev: st.Dev, Ino: st.Ino}
	if f, _ := h.marks.Entries(id); f == nil || !f.Perm.Any(fanotify.PreAccess) {
		t.Fatalf("the protected file's mark has no PRE_ACCESS: %+v", f)
	}
	if _, err := h.Apply(compile(t, blockFile("monitor", secret, "cat"))); err != nil {
		t.Fatal(err)
	}
	if m := readKernelMarks(t, h.arm.FD()); m.filesystem != 0 {
		t.Fatalf("arming group marks %+v after the reload to monitor mode, want none", m)
	}
	if f, _ := h.marks.Entries(id); f == nil || f.Perm.Any(fanotify.PreAccess|fanotify.AccessPerm) || f.Perm == 0 {
		t.Fatalf("a monitor-mode block filter's file: %+v, want open events only", f)
	}
	if err := marksAgree(t, h); err != nil {
		t.Fatal(err)
	}
}

// fanotifyFDs are the fanotify groups this process holds.
func fanotifyFDs(t *testing.T) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && l == "anon_inode:[fanotify]" {
			out = append(out, n)
		}
	}
	return out
}

// With arming off, no group of the daemon holds a file system mark, and
// a descriptor opened after the mark is still judged at its reads.
func TestArmingOffPlacesNoFileSystemMark(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	writeFile(t, secret, "SECRET")
	h := start(t, blockFile("protect", secret, "fsmonholder"), func(o *Options) { o.Arming = ArmOff })
	if h.arm != nil {
		t.Fatal("an arming group with arming off")
	}
	fds := fanotifyFDs(t)
	if len(fds) < 2 {
		t.Fatalf("fanotify groups %v: the engine's are not seen", fds)
	}
	for _, fd := range fds {
		if m := readKernelMarks(t, fd); m.filesystem != 0 {
			t.Fatalf("fanotify fd %d holds file system marks: %+v", fd, m)
		}
	}
	holder := startContent(t, "fsmonholder")
	fd := openedFD(t, holder, "open", secret)
	thief := startContent(t, "fsmonthief")
	thief.must(t, "steal "+strconv.Itoa(int(holder.PID()))+" "+fd, "ok")
	thief.must(t, "pread", "EPERM")
}

// On tmpfs, which has no pre-content events: protected files get
// FAN_ACCESS_PERM, the gauge counts them, the log says so once for the
// file system, and a stolen descriptor's reads are denied (writes, mmap
// and truncate through it are not: README, "what remains").
func TestTmpfsFallsBackToReadGuard(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("fsmon-test", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	for _, n := range []string{"a.key", "b.key"} {
		writeFile(t, filepath.Join(dir, n), "SECRET")
	}
	logs := newLogLines()
	h := start(t, newFileDir(dir), logs.option, func(o *Options) {})
	h.marks.WaitWarnings()
	const warn = "protected files without pre-content events"
	if n := strings.Count(logs.String(), warn); n != 1 {
		t.Fatalf("%d log lines %q for one tmpfs, want 1; the log:\n%s", n, warn, logs.String())
	}
	line := logs.line(t, warn)
	if !strings.Contains(line, "fs_type=tmpfs") || !strings.Contains(line, "mount="+dir) {
		t.Errorf("the line does not name the file system: %s", line)
	}
	var got []fsmon.FilterCount
	for _, c := range h.Snapshot().WithoutPreContent {
		if c.Profile == "t" {
			got = append(got, c)
		}
	}
	if len(got) != 1 || got[0].Filter != "keys" || got[0].Count != 2 {
		t.Fatalf("fsmon_protected_files_without_precontent: %+v, want keys 2", got)
	}
	holder := startContent(t, "sh")
	fd := openedFD(t, holder, "open", filepath.Join(dir, "a.key"))
	holder.must(t, "pread", "ok SECR")
	thief := startContent(t, "fsmonthief")
	thief.must(t, "steal "+strconv.Itoa(int(holder.PID()))+" "+fd, "ok")
	thief.must(t, "pread", "EPERM")
	h.rec.waitFor(t, "the thief's denied read", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Process.PID == thief.PID() && ev.Op == fsmon.OpRead
	})
}

// On ext4 every block filter is listed at 0.
func TestPreContentGaugeListsBlockFiltersAtZero(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	writeFile(t, secret, "s")
	h := start(t, blockFile("protect", secret, "cat"))
	got := h.Snapshot().WithoutPreContent
	if len(got) != 1 || got[0] != (fsmon.FilterCount{Profile: "t", Filter: "secret"}) {
		t.Fatalf("fsmon_protected_files_without_precontent: %+v, want t/secret at 0", got)
	}
}

// An allowed verdict is remembered for one run of one program: the
// allowed process execs another program (not on the allow list) that
// keeps the descriptor, and that program's reads are denied.
func TestContentVerdictIsPerProgramRun(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	writeFile(t, secret, "SECRET")
	h := start(t, blockFile("protect", secret, "fsmonholder"))
	holder := startContent(t, "fsmonholder")
	openedFD(t, holder, "open", secret)
	holder.must(t, "pread", "ok SECR")
	holder.must(t, "pread", "ok SECR")
	holder.Send(t, "exec fsmonother")
	holder.Expect(t, "ready")
	holder.must(t, "pread", "EPERM")
	h.rec.waitFor(t, "the new program's denied read", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Process.PID == holder.PID() && ev.Op == fsmon.OpAccess
	})
}

// While the loop is stuck, a stand-in judges content events as the loop
// does: a thief's reads through a stolen descriptor are denied and
// reported once, the allowed reader reads and is not reported.
func TestStandinJudgesContentEvents(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	writeFile(t, secret, "SECRET")
	h := start(t, blockFile("protect", secret, "fsmonholder"), func(o *Options) { o.DecisionTimeout = 100 * time.Millisecond })
	holder := startContent(t, "fsmonholder")
	fd := openedFD(t, holder, "open", secret)
	thief := startContent(t, "fsmonthief")
	thief.must(t, "steal "+strconv.Itoa(int(holder.PID()))+" "+fd, "ok")

	release := holdFirstDecision(t, h)
	// An open without a read: its decision hangs, the watchdog answers
	// it with the default and starts a stand-in.
	mustAllow(t, sh(t, ": < "+secret))
	timeoutsAtLeast(t, h, 1)
	answers := h.Snapshot().StandinAnswers
	for i := 0; i < 3; i++ {
		thief.must(t, "pread", "EPERM")
		holder.must(t, "pread", "ok SECR")
	}
	if st := h.Snapshot(); st.StandinAnswers < answers+6 {
		t.Fatalf("the reads were not answered by a stand-in (%d stand-in answers, want %d)", st.StandinAnswers, answers+6)
	}
	release()
	catDenied(t, h, secret)
	if evs := eventsOf(h, thief.PID()); len(evs) != 1 || evs[0].Kind != fsmon.KindDenied || evs[0].Op != fsmon.OpAccess {
		t.Errorf("the thief's three denied reads: want one denied access, got %s", dump(evs))
	}
	if evs := eventsOf(h, holder.PID()); len(evs) != 0 {
		t.Errorf("the allowed reader was reported: %s", dump(evs))
	}
}
