package engine

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/learnstate"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/marks"
)

// decRun runs a program in a child process and returns its pid with what
// it printed and how it ended: events are matched to the open by pid.
func decRun(t *testing.T, name string, args ...string) (int32, res) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	pid := int32(c.Process.Pid)
	err := c.Wait()
	if ctx.Err() != nil {
		t.Fatalf("%s %v hung: the open was never answered", name, args)
	}
	return pid, res{out.String(), err}
}

// byPID matches the reports of permission decisions (not changes) of
// the process pid.
func byPID(pid int32) func(*fsmon.Event) bool {
	return func(ev *fsmon.Event) bool { return ev.Kind != fsmon.KindChange && ev.Process.PID == pid }
}

// decFile returns a copy of the engine's table entry of the file p, nil
// when the engine does not track it.
func decFile(t *testing.T, h *harness, p string) *marks.Entry {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	f, _ := h.marks.Entries(marks.DevIno{Dev: st.Dev, Ino: st.Ino})
	return f
}

// decDir returns a copy of the engine's table entry of the directory p,
// nil when the engine does not track it.
func decDir(t *testing.T, h *harness, p string) *marks.Entry {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	_, d := h.marks.Entries(marks.DevIno{Dev: st.Dev, Ino: st.Ino})
	return d
}

// twoFilterWant is what one opener's open of the file must come to.
type twoFilterWant struct {
	deny    bool
	kind    fsmon.Kind // 0: not reported
	profile string     // "": either profile (equally severe outcomes)
}

// TestTwoFiltersOnOneFile: two profiles that both cover the host have a
// filter on the same file. The open comes to the most severe outcome of
// the two filters (denied, then violation, then learned, then access),
// whichever profile comes first in the file, and is reported once, under
// the filter that gave that outcome. "guard" allows head, "other" allows
// tail, cat is on neither list.
func TestTwoFiltersOnOneFile(t *testing.T) {
	type want = twoFilterWant
	const blockGuard = "behavior: block\n        allow: [/usr/bin/head]"
	const blockOther = "behavior: block\n        allow: [/usr/bin/tail]"
	const access = "report_access: true"
	const monitorOnly = "behavior: monitor"
	cases := []struct {
		name                   string
		guardMode, otherMode   string
		guardFilter, otherFilt string
		cat, head, tail        want
	}{
		{"protect block, monitor block", "protect", "monitor", blockGuard, blockOther,
			want{true, fsmon.KindDenied, "guard"}, want{false, fsmon.KindViolation, "other"}, want{true, fsmon.KindDenied, "guard"}},
		{"protect block, learn block", "protect", "learn", blockGuard, blockOther,
			want{true, fsmon.KindDenied, "guard"}, want{false, fsmon.KindLearned, "other"}, want{true, fsmon.KindDenied, "guard"}},
		{"protect block, protect block", "protect", "protect", blockGuard, blockOther,
			want{true, fsmon.KindDenied, ""}, want{true, fsmon.KindDenied, "other"}, want{true, fsmon.KindDenied, "guard"}},
		{"protect block, report_access", "protect", "monitor", blockGuard, access,
			want{true, fsmon.KindDenied, "guard"}, want{false, fsmon.KindAccess, "other"}, want{true, fsmon.KindDenied, "guard"}},
		{"protect block, monitor filter", "protect", "monitor", blockGuard, monitorOnly,
			want{true, fsmon.KindDenied, "guard"}, want{false, 0, ""}, want{true, fsmon.KindDenied, "guard"}},
		{"monitor block, learn block", "monitor", "learn", blockGuard, blockOther,
			want{false, fsmon.KindViolation, "guard"}, want{false, fsmon.KindLearned, "other"}, want{false, fsmon.KindViolation, "guard"}},
		{"monitor block, report_access", "monitor", "monitor", blockGuard, access,
			want{false, fsmon.KindViolation, "guard"}, want{false, fsmon.KindAccess, "other"}, want{false, fsmon.KindViolation, "guard"}},
		{"learn block, report_access", "learn", "learn", blockGuard, access,
			want{false, fsmon.KindLearned, "guard"}, want{false, fsmon.KindAccess, "other"}, want{false, fsmon.KindLearned, "guard"}},
	}
	for _, c := range cases {
		for _, otherFirst := range []bool{false, true} {
			name := c.name
			if otherFirst {
				name += ", other profile first"
			}
			t.Run(name, func(t *testing.T) {
				f := filepath.Join(t.TempDir(), "f")
				writeFile(t, f, "content\n")
				guard := fmt.Sprintf("  - name: guard\n    host: true\n    mode: %s\n    filters:\n      - name: g\n        path: %s\n        %s\n", c.guardMode, f, c.guardFilter)
				other := fmt.Sprintf("  - name: other\n    host: true\n    mode: %s\n    filters:\n      - name: o\n        path: %s\n        %s\n", c.otherMode, f, c.otherFilt)
				cfg := "profiles:\n" + guard + other
				if otherFirst {
					cfg = "profiles:\n" + other + guard
				}
				h := start(t, cfg)
				openers := []struct {
					exe  string
					want want
				}{{"cat", c.cat}, {"head", c.head}, {"tail", c.tail}}
				pids := make([]int32, len(openers))
				for i, o := range openers {
					pid, r := decRun(t, o.exe, f)
					pids[i] = pid
					if o.want.deny {
						mustDeny(t, r)
					} else {
						mustAllow(t, r)
						if r.out != "content\n" {
							t.Errorf("%s read %q", o.exe, r.out)
						}
					}
				}
				// cat is on no list, so every case reports it: a second cat,
				// decided after the opens above, is queued after their
				// reports.
				marker, _ := decRun(t, "cat", f)
				h.rec.waitFor(t, "the marker open's report", byPID(marker))
				for i, o := range openers {
					var got []fsmon.Event
					for _, ev := range h.rec.all() {
						if byPID(pids[i])(&ev) {
							got = append(got, ev)
						}
					}
					if o.want.kind == 0 {
						if len(got) > 0 {
							t.Errorf("%s: reported, want no report: %+v", o.exe, got)
						}
						continue
					}
					if len(got) != 1 {
						t.Errorf("%s: %d reports, want one %s: %s", o.exe, len(got), o.want.kind, dump(got))
						continue
					}
					ev := got[0]
					wantFilter := map[string]string{"guard": "g", "other": "o"}
					if ev.Kind != o.want.kind || ev.Op != fsmon.OpOpen || ev.Path != f ||
						(o.want.profile != "" && ev.Profile != o.want.profile) || wantFilter[ev.Profile] == "" || ev.Filter != wantFilter[ev.Profile] {
						t.Errorf("%s: got %s by %s/%s (%s), want %s by %q", o.exe, ev.Kind, ev.Profile, ev.Filter, ev.Path, o.want.kind, o.want.profile)
					}
					mode := map[string]string{"guard": c.guardMode, "other": c.otherMode}[ev.Profile]
					if ev.Mode.String() != mode {
						t.Errorf("%s: reported mode %s, profile %s has %s", o.exe, ev.Mode, ev.Profile, mode)
					}
					if o.want.kind == fsmon.KindLearned {
						l := learnstate.Key{Profile: ev.Profile, Filter: ev.Filter, Executable: "/usr/bin/" + o.exe}
						found := false
						for _, x := range h.LearnedSet() {
							found = found || x.Key() == l
						}
						if !found {
							t.Errorf("%s: learned set %v lacks %v", o.exe, h.LearnedSet(), l)
						}
					}
				}
			})
		}
	}
}

// TestChangeOfAFileTwoFiltersCover: a change of a file that a block
// filter and a monitor filter of another profile cover is reported once,
// under the block filter, whichever comes first in the file.
func TestChangeOfAFileTwoFiltersCover(t *testing.T) {
	for _, monitorFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("monitor profile first %v", monitorFirst), func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "f")
			writeFile(t, f, "x\n")
			guard := fmt.Sprintf("  - name: guard\n    host: true\n    mode: protect\n    filters:\n      - name: g\n        path: %s\n        behavior: block\n        allow: [/usr/bin/dash]\n", f)
			watch := fmt.Sprintf("  - name: watch\n    host: true\n    filters:\n      - name: w\n        path: %s\n", f)
			cfg := "profiles:\n" + guard + watch
			if monitorFirst {
				cfg = "profiles:\n" + watch + guard
			}
			h := start(t, cfg)
			mustAllow(t, sh(t, "echo y >> "+f))
			ev := h.rec.waitFor(t, "the write", change(fsmon.OpWrite, f))
			if ev.Profile != "guard" || ev.Filter != "g" || ev.Mode != fsmon.ModeProtect {
				t.Errorf("write reported under %s/%s (%s), want guard/g (protect)", ev.Profile, ev.Filter, ev.Mode)
			}
			// A second change made after the first: its report comes after
			// any second report of the first.
			mustAllow(t, cmd(t, "chmod", "600", f))
			h.rec.noneBefore(t, "a second report of the write", func(e *fsmon.Event) bool {
				return e.Kind == fsmon.KindChange && e.Op == fsmon.OpWrite && e.Profile != "guard"
			}, "the chmod", change(fsmon.OpAttrib, f))
			n := 0
			for _, e := range h.rec.all() {
				if e.Kind == fsmon.KindChange && e.Op == fsmon.OpWrite {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%d write reports, want 1: %s", n, dump(h.rec.all()))
			}
		})
	}
}

// TestConfiguredSymlink: a symlink the configuration spells out is
// followed when root owns it (the filter protects its target), never
// when another user does (who could aim the filter at any file). Opens
// through a symlink report the target's path.
func TestConfiguredSymlink(t *testing.T) {
	for _, tc := range []struct {
		name   string
		dirLnk bool // the link is a directory component of the path
		owner  int
	}{
		{"file link owned by root", false, 0},
		{"file link owned by a user", false, 65534},
		{"directory link owned by root", true, 0},
		{"directory link owned by a user", true, 65534},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			realDir := filepath.Join(base, "real")
			conf := filepath.Join(base, "conf")
			os.Mkdir(realDir, 0o755)
			os.Mkdir(conf, 0o755)
			target := filepath.Join(realDir, "target")
			writeFile(t, target, "t\n")
			var link, filterPath, via string
			if tc.dirLnk {
				link = filepath.Join(conf, "dir")
				if err := os.Symlink(realDir, link); err != nil {
					t.Fatal(err)
				}
				filterPath = filepath.Join(link, "target")
				via = filterPath
			} else {
				link = filepath.Join(conf, "link")
				if err := os.Symlink(target, link); err != nil {
					t.Fatal(err)
				}
				filterPath, via = link, link
			}
			if err := os.Lchown(link, tc.owner, tc.owner); err != nil {
				t.Fatal(err)
			}
			h := start(t, fmt.Sprintf(`
profiles:
  - name: t
    host: true
    mode: protect
    filters:
      - path: %s
        behavior: block
        allow: [/usr/bin/head]
`, filterPath))
			// Apply walked the tree before start returned: nothing is
			// marked later (the tree does not change), so what is allowed
			// now stays allowed.
			if tc.owner != 0 {
				mustAllow(t, cmd(t, "cat", via))
				mustAllow(t, cmd(t, "cat", target))
				if fe := decFile(t, h, target); fe != nil {
					t.Fatalf("the target of a link owned by uid %d is tracked, as %s", tc.owner, fe.Path)
				}
				return
			}
			pid, r := decRun(t, "cat", via)
			mustDeny(t, r)
			ev := h.rec.waitFor(t, "denied through the link", byPID(pid))
			if ev.Kind != fsmon.KindDenied || ev.Path != target || ev.Filter != filterPath {
				t.Errorf("open through the link: %s %s (filter %s), want denied %s (filter %s)", ev.Kind, ev.Path, ev.Filter, target, filterPath)
			}
			// The protection is the target's, by any name.
			pid, r = decRun(t, "cat", target)
			mustDeny(t, r)
			if ev := h.rec.waitFor(t, "denied by the target's name", byPID(pid)); ev.Kind != fsmon.KindDenied || ev.Path != target {
				t.Errorf("open of the target: %s %s", ev.Kind, ev.Path)
			}
			mustAllow(t, cmd(t, "head", via))
		})
	}
}

// TestReportedPathOfLinks: file.path is where the kernel says the opened
// file is: a symlink under its target, a hard link under its own name.
func TestReportedPathOfLinks(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s\n")
	sym := filepath.Join(other, "sym")
	hard := filepath.Join(other, "hard")
	if err := os.Symlink(secret, sym); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(secret, hard); err != nil {
		t.Fatal(err)
	}
	h := start(t, protectFile("monitor", secret))
	for _, c := range []struct{ open, want string }{
		{sym, secret},
		{hard, hard},
		{"/proc/self/root" + sym, secret},
		{secret, secret},
	} {
		pid, r := decRun(t, "cat", c.open)
		mustAllow(t, r)
		ev := h.rec.waitFor(t, "violation of "+c.open, byPID(pid))
		if ev.Kind != fsmon.KindViolation || ev.Path != c.want || ev.Filter != "secret" {
			t.Errorf("open of %s: %s %s (filter %s), want violation %s (filter secret)", c.open, ev.Kind, ev.Path, ev.Filter, c.want)
		}
	}
	if strings.Contains(dump(h.rec.all()), sym) {
		t.Errorf("a report names the symlink: %s", dump(h.rec.all()))
	}
}
