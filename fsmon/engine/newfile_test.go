package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/marks"
	"github.com/fsmon/fsmon_exporter/testutil/stepper"
)

// newFileDir is a config whose block filter covers *.key in dir by name,
// allowing the shell (by name) and head (by path).
func newFileDir(dir string) string {
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
        allow: [/usr/bin/head, sh]
`, dir)
}

// A new file covered by its directory's name rule has its own inode mark
// by the time its creator's open returns, even while placement is busy
// (a reload's walk, a container's): a hard link made elsewhere at once
// is denied, not read through a name no rule covers.
func TestNewFileIsMarkedBeforeItsAnswer(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	h := start(t, newFileDir(dir))
	// Placement held, as by a walk that takes its time: neither the
	// tree event nor anything that waits for placement can mark the file.
	pl := h.marks.Place()
	released := false
	release := func() {
		if !released {
			released = true
			pl.Done()
		}
	}
	defer release()

	stolen := linkNewFile(t, h, dir, elsewhere, func() {})
	release()
	mustAllow(t, cmd(t, "head", stolen))
}

// While the loop is stuck, the stand-in that answers in its place marks a
// new file before its creator's answer just as the loop would: a hard
// link made at once is denied.
func TestNewFileIsMarkedBeforeItsAnswerByAStandin(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	first := filepath.Join(dir, "first.key")
	writeFile(t, first, "first")
	h := start(t, newFileDir(dir), func(o *Options) { o.DecisionTimeout = 100 * time.Millisecond })
	pl := h.marks.Place() // nothing but a decision can mark the new file
	released := false
	release := func() {
		if !released {
			released = true
			pl.Done()
		}
	}
	defer release()
	holdFirstDecision(t, h) // released when the test ends
	// The loop's first decision hangs; the watchdog answers it with the
	// default and starts a stand-in.
	// An open without a read: the default answers the open only; a
	// read would be a content event of its own, judged by the policy.
	mustAllow(t, sh(t, ": < "+first))
	timeoutsAtLeast(t, h, 1)

	linkNewFile(t, h, dir, elsewhere, func() {
		if st := h.Snapshot(); st.StandinAnswers < 1 {
			t.Fatalf("the creator's open was not answered by a stand-in (stand-in answers %d)", st.StandinAnswers)
		}
	})
}

// linkNewFile has a shell create dir/new.key and, once its open has
// returned (then answered calls), checks that the new file has a
// permission mark of its own, links it into elsewhere, lets the shell
// write the secret, and checks that an outsider's open of the link is
// denied and reported. It returns the link.
func linkNewFile(t *testing.T, h *harness, dir, elsewhere string, answered func()) string {
	t.Helper()
	p := filepath.Join(dir, "new.key")
	w := stepper.Shell(t, "exec 3>"+p+"; echo opened; read x; echo SECRET >&3; exec 3>&-; echo written; read x")
	w.Expect(t, "opened")
	answered()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	f, _ := h.marks.Entries(marks.DevIno{Dev: st.Dev, Ino: st.Ino})
	if f == nil || f.Perm == 0 {
		t.Fatalf("the new file has no permission mark of its own when its creator's open returned: %+v", f)
	}
	stolen := filepath.Join(elsewhere, "stolen")
	if err := os.Link(p, stolen); err != nil {
		t.Fatal(err)
	}
	w.Send(t, "")
	w.Expect(t, "written")
	mustDeny(t, cmd(t, "cat", stolen))
	h.rec.waitFor(t, "the denied open through the link", kind(fsmon.KindDenied, stolen))
	return stolen
}
