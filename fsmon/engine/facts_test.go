package engine

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/baseline"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// monitorDir watches the changes of every file in dir.
func monitorDir(dir string) string {
	return fmt.Sprintf("profiles: [{name: t, host: true, mode: monitor, filters: [{name: watched, path: %q}]}]", dir)
}

func sum(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// facts is a predicate on a change event's facts after and before.
type factsWant struct {
	op                  fsmon.Op
	path                string
	after, before       string // content whose hash the facts carry
	size, prevSize      int64
	mode, prevMode      uint32
	uid, prevUID        uint32
	newInode, whileDown bool
}

func (f factsWant) match(ev *fsmon.Event) bool {
	if ev.Kind != fsmon.KindChange || ev.Op != f.op || ev.Path != f.path || ev.File == nil || ev.Previous == nil {
		return false
	}
	return ev.File.Hash == fsmon.HashComputed && ev.File.SHA256 == sum(f.after) && ev.File.Size == f.size &&
		ev.Previous.Hash == fsmon.HashComputed && ev.Previous.SHA256 == sum(f.before) && ev.Previous.Size == f.prevSize &&
		ev.File.Mode == f.mode && ev.Previous.Mode == f.prevMode && ev.File.UID == f.uid && ev.Previous.UID == f.prevUID
}

func (f factsWant) String() string {
	return fmt.Sprintf("%s of %s: %q (%d bytes, %04o, uid %d) after %q (%d bytes, %04o, uid %d)",
		f.op, f.path, f.after, f.size, f.mode, f.uid, f.before, f.prevSize, f.prevMode, f.prevUID)
}

func dumpFacts(evs []fsmon.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "\n  %s %s %s reason=%q", ev.Kind, ev.Op, ev.Path, ev.Reason)
		for _, x := range []struct {
			n string
			f *fsmon.FileFacts
		}{{"after", ev.File}, {"before", ev.Previous}} {
			if x.f != nil {
				fmt.Fprintf(&b, " %s{size=%d mode=%04o uid=%d hash=%x %s}", x.n, x.f.Size, x.f.Mode, x.f.UID, x.f.SHA256[:4], x.f.Hash)
			}
		}
	}
	return b.String()
}

func (r *recorder) waitFacts(t *testing.T, f factsWant) fsmon.Event {
	t.Helper()
	for _, ev := range r.all() {
		if f.match(&ev) {
			return ev
		}
	}
	defer func() {
		if t.Failed() {
			t.Logf("events with facts: %s", dumpFacts(r.all()))
		}
	}()
	return r.waitFor(t, f.String(), f.match)
}

// TestChangeFacts: a write, a chmod, a chown, a replacement by rename
// and a truncation of a watched file each give its facts before and
// after, hashes included; the owner is named from the host's
// /etc/passwd.
func TestChangeFacts(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	writeFile(t, f, "one")
	if err := os.Chmod(f, 0o644); err != nil {
		t.Fatal(err)
	}
	h := start(t, monitorDir(dir))
	h.waitBaseline(t, 1)

	mustAllow(t, cmd(t, "sh", "-c", `printf two >> "$0"`, f))
	ev := h.rec.waitFacts(t, factsWant{op: fsmon.OpWrite, path: f, after: "onetwo", size: 6, before: "one", prevSize: 3, mode: 0o644, prevMode: 0o644})
	if ev.Process.PID <= 0 || ev.Reason != 0 {
		t.Fatalf("a change seen live names its process and has no reason: %+v", ev)
	}

	mustAllow(t, cmd(t, "chmod", "600", f))
	h.rec.waitFacts(t, factsWant{op: fsmon.OpAttrib, path: f, after: "onetwo", size: 6, before: "onetwo", prevSize: 6, mode: 0o600, prevMode: 0o644})

	mustAllow(t, cmd(t, "chown", "65534:65534", f))
	ev = h.rec.waitFacts(t, factsWant{op: fsmon.OpAttrib, path: f, after: "onetwo", size: 6, before: "onetwo", prevSize: 6, mode: 0o600, prevMode: 0o600, uid: 65534})
	if u, err := user.LookupId("65534"); err == nil && ev.File.OwnerName != u.Username {
		t.Fatalf("owner %q, want %q (the host's /etc/passwd)", ev.File.OwnerName, u.Username)
	}
	if ev.File.GID != 65534 || ev.Previous.GID != 0 || ev.Previous.OwnerName != "root" {
		t.Fatalf("group or previous owner wrong: after %+v before %+v", *ev.File, *ev.Previous)
	}

	other := filepath.Join(t.TempDir(), "new") // not watched: only the rename is
	writeFile(t, other, "three")
	if err := os.Chmod(other, 0o640); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, cmd(t, "mv", other, f))
	h.rec.waitFacts(t, factsWant{op: fsmon.OpRename, path: f, after: "three", size: 5, before: "onetwo", prevSize: 6, mode: 0o640, prevMode: 0o600, prevUID: 65534})

	mustAllow(t, cmd(t, "sh", "-c", `: > "$0"`, f))
	h.rec.waitFacts(t, factsWant{op: fsmon.OpWrite, path: f, after: "", size: 0, before: "three", prevSize: 5, mode: 0o640, prevMode: 0o640})

	// A replacement of the same size, mode and mtime: only the hash says
	// the content is another.
	mustAllow(t, cmd(t, "sh", "-c", `printf abcdef > "$0"`, f))
	h.rec.waitFacts(t, factsWant{op: fsmon.OpWrite, path: f, after: "abcdef", size: 6, before: "", prevSize: 0, mode: 0o640, prevMode: 0o640})
	writeFile(t, other, "fedcba")
	if err := os.Chmod(other, 0o640); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, cmd(t, "touch", "-r", f, other))
	mustAllow(t, cmd(t, "mv", other, f))
	h.rec.waitFacts(t, factsWant{op: fsmon.OpRename, path: f, after: "fedcba", size: 6, before: "abcdef", prevSize: 6, mode: 0o640, prevMode: 0o640})
}

// TestHashLimits: a file larger than HashMaxSize is not hashed, nor
// the changes past a filter's rate; each event says why.
func TestHashLimits(t *testing.T) {
	dir := t.TempDir()
	big, small := filepath.Join(dir, "big"), filepath.Join(dir, "small")
	writeFile(t, big, "0123456789")
	writeFile(t, small, "s")
	h := start(t, monitorDir(dir), func(o *Options) { o.HashMaxSize = 8; o.HashRate = 0.001 })
	h.waitBaseline(t, 2)
	hashOf := func(path string, size int64) func(ev *fsmon.Event) bool {
		return func(ev *fsmon.Event) bool {
			return ev.Kind == fsmon.KindChange && ev.Op == fsmon.OpWrite && ev.Path == path && ev.File != nil && ev.File.Size == size
		}
	}
	mustAllow(t, cmd(t, "sh", "-c", `printf x >> "$0"`, big))
	if ev := h.rec.waitFor(t, "write of big", hashOf(big, 11)); ev.File.Hash != fsmon.HashSkippedSize {
		t.Fatalf("a file past the size limit: hash %v, want skipped (size)", ev.File.Hash)
	}
	mustAllow(t, cmd(t, "sh", "-c", `printf x >> "$0"`, small))
	if ev := h.rec.waitFor(t, "first write of small", hashOf(small, 2)); ev.File.Hash != fsmon.HashComputed || ev.File.SHA256 != sum("sx") {
		t.Fatalf("the filter's first hash: %v %x", ev.File.Hash, ev.File.SHA256)
	}
	mustAllow(t, cmd(t, "sh", "-c", `printf x >> "$0"`, small))
	if ev := h.rec.waitFor(t, "second write of small", hashOf(small, 3)); ev.File.Hash != fsmon.HashSkippedRate {
		t.Fatalf("past the filter's rate: hash %v, want skipped (rate)", ev.File.Hash)
	}
	st := h.Snapshot().Baseline
	if st.Skipped[fsmon.HashSkippedSize] == 0 || st.Skipped[fsmon.HashSkippedRate] == 0 || st.Hashed == 0 || st.Files != 2 {
		t.Fatalf("baseline state: %+v", st)
	}
}

// TestChangesWhileDown: what was created, deleted, written, chmod'ed
// and replaced while the engine was stopped is reported at its next
// start, as changes made while it was down, by no known process; an
// unchanged file is not, and the first start reports nothing.
func TestChangesWhileDown(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(t.TempDir(), "state")
	for _, n := range []string{"written", "deleted", "chmodded", "replaced", "same", "sneaky"} {
		writeFile(t, filepath.Join(dir, n), n)
		if err := os.Chmod(filepath.Join(dir, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	withState := func(o *Options) { o.StateDir = state }
	p := func(n string) string { return filepath.Join(dir, n) }

	h1 := start(t, monitorDir(dir), withState)
	mustAllow(t, cmd(t, "sh", "-c", `echo m > "$0"`, p("marker"))) // the daemon's own changes are not reported
	h1.rec.noneBefore(t, "of the first start", whileDown, "the marker's creation", change(fsmon.OpCreate, p("marker")))
	h1.stop()
	if _, err := os.Stat(filepath.Join(state, baseline.FileName)); err != nil {
		t.Fatalf("no baseline written at stop: %v", err)
	}

	writeFile(t, p("written"), "written more")
	if err := os.Remove(p("deleted")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p("chmodded"), 0o600); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "x")
	writeFile(t, other, "replaced")
	if err := os.Chmod(other, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, p("replaced")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("created"), "created")
	// The same size and mtime, other content: only the hash can tell.
	st, err := os.Stat(p("sneaky"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("sneaky"), "SNEAKY")
	if err := os.Chtimes(p("sneaky"), st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}

	h2 := start(t, monitorDir(dir), withState)
	want := map[string]fsmon.Op{"written": fsmon.OpWrite, "deleted": fsmon.OpDelete, "chmodded": fsmon.OpAttrib,
		"replaced": fsmon.OpRename, "created": fsmon.OpCreate, "sneaky": fsmon.OpWrite}
	for n, op := range want {
		ev := h2.rec.waitFor(t, fmt.Sprintf("%s of %s while down", op, n), func(ev *fsmon.Event) bool {
			return whileDown(ev) && ev.Op == op && ev.Path == p(n)
		})
		if ev.Process.PID != 0 || ev.Process.UserID != -1 || !ev.Reason.ProcessUnknown() || ev.Profile != "t" || ev.Filter != "watched" || ev.Mode != fsmon.ModeMonitor {
			t.Fatalf("%s: %+v", n, ev)
		}
		switch op {
		case fsmon.OpCreate:
			if ev.Previous != nil || ev.File == nil || ev.File.SHA256 != sum("created") {
				t.Fatalf("created: %s", dumpFacts([]fsmon.Event{ev}))
			}
		case fsmon.OpDelete:
			if ev.File != nil || ev.Previous == nil || ev.Previous.SHA256 != sum("deleted") {
				t.Fatalf("deleted: %s", dumpFacts([]fsmon.Event{ev}))
			}
		default:
			if ev.File == nil || ev.Previous == nil || ev.Previous.SHA256 != sum(n) {
				t.Fatalf("%s: %s", n, dumpFacts([]fsmon.Event{ev}))
			}
		}
	}
	// A change made now comes after the comparison: by then every
	// change found at start has been reported.
	mustAllow(t, cmd(t, "sh", "-c", `echo later >> "$0"`, p("same")))
	h2.rec.waitFor(t, "a live write", change(fsmon.OpWrite, p("same")))
	var got []fsmon.Event
	for _, ev := range h2.rec.all() {
		if whileDown(&ev) {
			got = append(got, ev)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%d changes while down reported, want %d: %s", len(got), len(want), dumpFacts(got))
	}

	// The comparison became the baseline: the next start finds nothing.
	h2.stop()
	h3 := start(t, monitorDir(dir), withState)
	mustAllow(t, cmd(t, "sh", "-c", `echo again >> "$0"`, p("same")))
	h3.rec.noneBefore(t, "at a start after nothing changed", whileDown, "a live write", change(fsmon.OpWrite, p("same")))
}

// waitBaseline waits until the baseline holds n files: the comparison
// at start is done (it runs beside the first events).
func (h *harness) waitBaseline(t *testing.T, n int) {
	t.Helper()
	eventually(t, "the baseline", func() error {
		if got := h.Snapshot().Baseline.Files; got != n {
			return fmt.Errorf("%d files in the baseline, want %d", got, n)
		}
		return nil
	})
}

func whileDown(ev *fsmon.Event) bool { return ev.Reason == fsmon.ReasonWhileDown }

// TestBadBaseline: a baseline file that is truncated, foreign or huge
// is an error in the log that names the file; it is kept as FILE.bad,
// the engine runs, and a new baseline is written.
func TestBadBaseline(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), "f")
	good := func(t *testing.T) []byte {
		b := baseline.Encode(&baseline.Baseline{Files: map[string]*baseline.Entry{
			"/x/one": {Filter: baseline.Filter{Profile: "t", Filter: "watched"}, Facts: fsmon.FileFacts{Size: 1, Hash: fsmon.HashSkippedSize}},
			"/x/two": {Filter: baseline.Filter{Profile: "t", Filter: "watched"}, Facts: fsmon.FileFacts{Size: 2, Hash: fsmon.HashSkippedSize}},
		}}, time.Unix(0, 0))
		return b
	}
	for _, c := range []struct {
		name, want string
		make       func(t *testing.T, p string)
	}{
		{"truncated", ":3: the last line has no newline (a truncated file?)", func(t *testing.T, p string) {
			b := good(t)
			writeBytes(t, p, b[:len(b)-20])
		}},
		{"foreign", ":1: not a watched-files baseline", func(t *testing.T, p string) {
			writeBytes(t, p, []byte(`{"version": 1, "entries": []}`+"\n"))
		}},
		{"huge", "larger than the", func(t *testing.T, p string) {
			writeBytes(t, p, good(t))
			if err := os.Truncate(p, baseline.DefaultLimits.MaxBytes+1); err != nil { // sparse: costs no disk
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			state := t.TempDir()
			p := filepath.Join(state, baseline.FileName)
			c.make(t, p)
			var logs testroot.Buffer
			h := start(t, monitorDir(dir), func(o *Options) {
				o.StateDir = state
				o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			})
			mustAllow(t, cmd(t, "sh", "-c", `echo g >> "$0"`, filepath.Join(dir, "f")))
			h.rec.waitFor(t, "a change", change(fsmon.OpWrite, filepath.Join(dir, "f")))
			h.stop()
			l := logs.String()
			if !strings.Contains(l, "level=ERROR") || !strings.Contains(l, "err="+`"`+p) || !strings.Contains(l, c.want) || !strings.Contains(l, "kept as "+p+".bad") {
				t.Fatalf("no clear error naming %s (%q):\n%s", p, c.want, l)
			}
			if _, err := os.Stat(p + ".bad"); err != nil {
				t.Fatalf("the bad file was not kept: %v", err)
			}
			b, err := baseline.Load(state, baseline.DefaultLimits)
			if err != nil || b == nil || b.Files[filepath.Join(dir, "f")] == nil || len(b.Files) != 1 {
				t.Fatalf("new baseline: %+v, %v", b, err)
			}
			for _, ev := range h.rec.all() {
				if whileDown(&ev) {
					t.Fatalf("a new baseline reports nothing: %s", dumpFacts([]fsmon.Event{ev}))
				}
			}
		})
	}
}

func writeBytes(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestContainerFileFacts: a container's file is named by the
// container's own /etc/passwd and /etc/group, it has a baseline while
// the container runs, and none once it is gone.
func TestContainerFileFacts(t *testing.T) {
	testroot.Require(t)
	root := busyboxRoot(t)
	writeFile(t, filepath.Join(root, "etc", "passwd"), "croot:x:0:0::/:/bin/sh\napp:x:54321:54321::/:/bin/sh\n")
	writeFile(t, filepath.Join(root, "etc", "group"), "croot:x:0:\napps:x:54321:\n")
	conf := "/etc/app-" + testRun + ".conf" // no such file on the host
	p := filepath.Join(root, conf)
	writeFile(t, p, "conf")
	if err := os.Chown(p, 54321, 54321); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	h := startScanning(t, scanForTests, fmt.Sprintf("profiles: [{name: everywhere, filters: [{path: %q}]}]", conf))
	c := startContainer(t, root, "facts", cgroupV1Docker)
	waitGroup(t, h, c, true)
	h.waitBaseline(t, 1)
	mustAllow(t, c.exec(t, "sh", "-c", "chmod 600 "+conf))
	ev := h.rec.waitFacts(t, factsWant{op: fsmon.OpAttrib, path: conf, after: "conf", size: 4, before: "conf", prevSize: 4,
		mode: 0o600, prevMode: 0o640, uid: 54321, prevUID: 54321})
	if ev.Container.ID != c.id || ev.File.OwnerName != "app" || ev.File.GroupName != "apps" || ev.Previous.OwnerName != "app" {
		t.Fatalf("container %q, owner %q, group %q, before %q: want the container's own names", ev.Container.ID, ev.File.OwnerName, ev.File.GroupName, ev.Previous.OwnerName)
	}
	c.stop()
	h.waitBaseline(t, 0)
}
