package engine

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/marks"
	"github.com/fsmon/fsmon_exporter/testutil/stepper"
)

// Neighbours of protected files (docs/design/deny.md §9): the opens of a
// file no filter asks about, in a directory marked for a protected file
// beside it, go past the daemon after the first, without a way for a
// protected name to be read.

// neighbourConfig protects the names secret.key and *.key in dir; sed,
// mv and sh may read them (they replace it), nobody else.
func neighbourConfig(dir string) string {
	return fmt.Sprintf(`
profiles:
  - name: t
    host: true
    mode: protect
    filters:
      - name: keys
        path: %s
        regex: '.*\.key'
        behavior: block
        allow: [sed, mv]
`, dir)
}

func passAge(d time.Duration) func(*Options) { return func(o *Options) { o.PassAge = d } }

// opensPast waits until the kernel holds a pass for p: its first open
// after it is older than the pass age (made by a child: the engine
// answers its own at once) gets it one.
func opensPast(t *testing.T, h *harness, p string) {
	t.Helper()
	eventually(t, p+" let past the daemon", func() error {
		mustAllow(t, cmd(t, "cat", p))
		if !passed(t, h, p) {
			return fmt.Errorf("no pass for %s in the kernel", p)
		}
		return nil
	})
}

// passed reports whether the permission group holds a pass (an
// ignore-only inode mark) for the inode of p, from the group's fdinfo.
func passed(t *testing.T, h *harness, p string) bool {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(h.perm.FD()))
	if err != nil {
		t.Fatal(err)
	}
	want := "fanotify ino:" + strconv.FormatUint(st.Ino, 16) + " "
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, want) {
			return strings.Contains(l, " mask:0 ") && !strings.Contains(l, " ignored_mask:0 ")
		}
	}
	return false
}

// opensOf counts the permission events n opens of p by a child make.
func opensOf(t *testing.T, h *harness, p string, n int) uint64 {
	t.Helper()
	before := h.Snapshot().PermissionEvents
	for i := 0; i < n; i++ {
		mustAllow(t, cmd(t, "cat", p))
	}
	return h.Snapshot().PermissionEvents - before
}

// TestNeighbourOpensGoPastTheDaemon: after its first open, a file beside a
// protected one makes no permission event; a write makes its next open
// one again; the protected file stays protected; the kernel holds no
// permission mark on the neighbour beyond its pass.
func TestNeighbourOpensGoPastTheDaemon(t *testing.T) {
	dir := t.TempDir()
	secret, plain := filepath.Join(dir, "secret.key"), filepath.Join(dir, "plain.txt")
	writeFile(t, secret, "SECRET")
	writeFile(t, plain, "plain")
	h := start(t, neighbourConfig(dir), passAge(time.Millisecond))
	opensPast(t, h, plain)
	if err := marksAgree(t, h); err != nil {
		t.Fatal(err)
	}
	if n := opensOf(t, h, plain, 5); n != 0 {
		t.Fatalf("5 opens of the neighbour made %d permission events", n)
	}
	if h.marks.Passes() == 0 {
		t.Fatal("no pass counted")
	}
	mustDeny(t, cmd(t, "cat", secret))
	h.rec.waitFor(t, "the denied open", kind(fsmon.KindDenied, secret))
	// Written (by a child: the write clears the pass in the kernel), it is
	// asked about again, and passed again once old enough.
	mustAllow(t, sh(t, "echo more >> "+plain))
	if n := opensOf(t, h, plain, 1); n != 1 {
		t.Fatalf("the open after a write made %d permission events, want 1", n)
	}
	opensPast(t, h, plain)
}

// TestNeighbourWithTwoLinksIsAlwaysAsked: a file with another link is
// not passed (the other name may be one a filter covers).
func TestNeighbourWithTwoLinksIsAlwaysAsked(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	writeFile(t, filepath.Join(dir, "secret.key"), "SECRET")
	plain := filepath.Join(dir, "plain.txt")
	writeFile(t, plain, "plain")
	if err := os.Link(plain, filepath.Join(elsewhere, "other")); err != nil {
		t.Fatal(err)
	}
	h := start(t, neighbourConfig(dir), passAge(time.Nanosecond))
	if n := opensOf(t, h, plain, 3); n != 3 {
		t.Fatalf("3 opens of a neighbour with two links made %d permission events, want 3", n)
	}
}

// TestNoPassWhilePlacementIsHeld: a placement (a walk, a tree event) may
// be marking the very file; a pass decided meanwhile is not placed.
func TestNoPassWhilePlacementIsHeld(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "secret.key"), "SECRET")
	plain := filepath.Join(dir, "plain.txt")
	writeFile(t, plain, "plain")
	h := start(t, neighbourConfig(dir), passAge(time.Nanosecond))
	pl := h.marks.Place()
	n := opensOf(t, h, plain, 3)
	pl.Done()
	if n != 3 {
		t.Fatalf("3 opens of the neighbour while placement was held made %d permission events, want 3", n)
	}
	opensPast(t, h, plain)
}

// TestPassedNeighbourRenamedUnderACoveredName: a passed file renamed to a
// covered name is protected once its tree event has marked it (the mark
// takes the pass away: an ignore mask wins over the inode's own mark);
// and a reload whose filter covers a passed file protects it too.
func TestPassedNeighbourRenamedUnderACoveredName(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "secret.key"), "SECRET")
	plain, other := filepath.Join(dir, "plain.txt"), filepath.Join(dir, "other.txt")
	writeFile(t, plain, "plain")
	writeFile(t, other, "other")
	h := start(t, neighbourConfig(dir), passAge(time.Millisecond))
	opensPast(t, h, plain)
	opensPast(t, h, other)

	renamed := filepath.Join(dir, "renamed.key")
	var st syscall.Stat_t
	if err := syscall.Stat(plain, &st); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, cmd(t, "mv", plain, renamed))
	eventually(t, "the renamed file marked", func() error {
		if f, _ := h.marks.Entries(marks.DevIno{Dev: st.Dev, Ino: st.Ino}); f == nil || f.Perm == 0 {
			return fmt.Errorf("no permission mark yet: %+v", f)
		}
		return nil
	})
	// The open itself (no read: a read would be judged by the content
	// guard whatever the open did).
	mustDeny(t, sh(t, ": < "+renamed))

	// Reload: other.txt is covered now.
	res, err := h.Apply(compile(t, neighbourConfig(dir)+`
      - name: others
        path: `+other+`
        behavior: block
        allow: [mv]
`))
	if err != nil || res.Errors > 0 {
		t.Fatalf("apply: %v %+v", err, res)
	}
	mustDeny(t, sh(t, ": < "+other))
}

// TestTemporaryFileRenamedOverIsJudgedAtOnce: what passwd and sed -i do
// (write a new file under another name, rename it over the protected
// one), with a third process reading the new file before the rename,
// while nothing can mark it (placement held, so its tree event waits):
// the first open of the protected name after the rename is judged and
// denied. The new file was changed moments before, so it got no pass.
func TestTemporaryFileRenamedOverIsJudgedAtOnce(t *testing.T) {
	dir := t.TempDir()
	secret, tmp := filepath.Join(dir, "secret.key"), filepath.Join(dir, "secret.tmp")
	writeFile(t, secret, "OLD")
	h := start(t, neighbourConfig(dir))
	mustAllow(t, sh(t, "printf NEWSECRET > "+tmp))
	mustAllow(t, cmd(t, "cat", tmp)) // a reader of the temporary file
	pl := h.marks.Place()
	defer pl.Done()
	mustAllow(t, cmd(t, "mv", tmp, secret))
	// The open itself is denied (without the pass, before any read).
	mustDeny(t, sh(t, ": < "+secret))
}

// Attacks run concurrently with an attacker opening the protected name in
// a loop (a child: the test binary with neighbourEnv set); it must never
// read the content.
const neighbourEnv = "FSMON_TEST_NEIGHBOUR_ATTACK"

// runNeighbourAttack is the attacker: "PATH STOPFILE". It opens and reads
// PATH until STOPFILE exists, then prints the opens tried, those that
// succeeded and the reads that returned data, and what it read.
func runNeighbourAttack(spec string) int {
	f := strings.Fields(spec)
	if len(f) != 2 {
		return 2
	}
	var tries, opened, leaks int
	var got []byte
	buf := make([]byte, 256)
	fmt.Println("ready")
	for {
		if _, err := os.Stat(f[1]); err == nil {
			break
		}
		tries++
		fd, err := syscall.Open(f[0], syscall.O_RDONLY, 0)
		if err != nil {
			continue
		}
		opened++
		if n, _ := syscall.Read(fd, buf); n > 0 && bytes.Contains(buf[:n], []byte("SECRET")) {
			leaks++
			got = append(got[:0], buf[:n]...)
		}
		syscall.Close(fd)
	}
	fmt.Printf("tries %d opened %d leaks %d got %q\n", tries, opened, leaks, got)
	return 0
}

// TestReplacedProtectedFileUnderAttack: sed -i, a write-and-rename with a
// reader of the temporary file, a file moved in from another directory,
// a hard link made from another directory and a new file, each repeated,
// while an attacker opens the protected name in a loop and a neighbour is
// being passed: the attacker never reads the protected content.
func TestReplacedProtectedFileUnderAttack(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const rounds = 40
	cases := []struct {
		name, target, script string
	}{
		{"sed -i", "secret.key", `sed -i 's/SECRET[0-9]*/SECRET'$i'/' $D/secret.key`},
		{"write and rename over", "secret.key", `printf SECRET$i > $D/new.$i; cat $D/new.$i > /dev/null; mv $D/new.$i $D/secret.key`},
		{"moved in", "in.key", `printf SECRET$i > $O/x.$i; cat $O/x.$i > /dev/null; mv $O/x.$i $D/in.key`},
		{"hard link", "ln.key", `printf SECRET$i > $O/l.$i; rm -f $D/ln.key; ln $O/l.$i $D/ln.key`},
		{"new file", "new.key", `rm -f $D/new.key; printf SECRET$i > $D/new.key`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, other := t.TempDir(), t.TempDir()
			writeFile(t, filepath.Join(dir, "secret.key"), "SECRET")
			plain := filepath.Join(dir, "plain.txt")
			writeFile(t, plain, "plain")
			// A short pass age, so that the neighbour is passed while the
			// attack runs; the files the scripts write are younger.
			h := start(t, neighbourConfig(dir), passAge(2*time.Second))
			stop := filepath.Join(other, "stop")
			t.Setenv(neighbourEnv, filepath.Join(dir, c.target)+" "+stop)
			attacker := stepper.Start(t, self)
			os.Unsetenv(neighbourEnv)
			attacker.Expect(t, "ready")
			script := fmt.Sprintf("D=%s; O=%s; i=0; while [ $i -lt %d ]; do i=$((i+1)); %s; cat %s > /dev/null; done; echo done",
				dir, other, rounds, c.script, plain)
			mustAllow(t, sh(t, script))
			// The neighbour is passed while the protected name is under
			// attack (the pass machinery runs beside the attack).
			opensPast(t, h, plain)
			writeFile(t, stop, "")
			out := attacker.Line(t)
			t.Logf("%s: %s (passes %d)", c.name, out, h.marks.Passes())
			f := strings.Fields(out)
			if len(f) < 6 || f[0] != "tries" {
				t.Fatalf("attacker: %q", out)
			}
			if n, _ := strconv.Atoi(f[5]); n != 0 {
				t.Fatalf("the attacker read the protected content: %s", out)
			}
			if n, _ := strconv.Atoi(f[1]); n == 0 {
				t.Fatal("the attacker tried nothing")
			}
		})
	}
}
