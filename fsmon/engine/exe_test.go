package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/cnproc"
)

func requireExeCache(t *testing.T, h *harness) {
	t.Helper()
	if h.exes.on() {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("the process events connector does not work here (see the engine's log); CI runs in the initial namespaces, where it must")
	}
	t.Skip("the process events connector does not work here: the executable cache is off")
}

// TestExecInPlaceIsJudgedAfresh: a process the allow list lets in (a
// shell, by path or by name) opens the file twice, so that the second
// decision comes from the cache, then execs, in the same process, a
// program the list does not name. That program's open must be denied.
// The same run with the exec events withheld from the cache lets it in,
// which shows the denial comes from the connector's event.
func TestExecInPlaceIsJudgedAfresh(t *testing.T) {
	for _, allow := range []string{"/bin/sh", "sh"} {
		t.Run(allow, func(t *testing.T) {
			dir := t.TempDir()
			secret := filepath.Join(dir, "secret")
			writeFile(t, secret, "s\n")
			h := start(t, fmt.Sprintf(`
profiles:
  - name: t
    host: true
    mode: protect
    filters:
      - name: secret
        path: %s
        behavior: block
        allow: [%s]
`, secret, allow))
			requireExeCache(t, h)
			script := fmt.Sprintf(": < %[1]s && : < %[1]s && echo shell-read && exec cat %[1]s", secret)

			hits := h.exes.hits.Load()
			r := sh(t, script)
			if !containsLine(r.out, "shell-read") {
				t.Fatalf("the allowed shell was not let in: %v: %s", r.err, r.out)
			}
			mustDeny(t, r)
			if h.exes.hits.Load() == hits {
				t.Fatal("no decision came from the cache: the test shows nothing")
			}
			ev := h.rec.waitFor(t, "denied cat", kind(fsmon.KindDenied, secret))
			if ev.Process.ExecutablePath != "/usr/bin/cat" {
				t.Errorf("denied %s, want /usr/bin/cat", ev.Process.ExecutablePath)
			}

			// Withhold exec events: the cache keeps the shell, and cat
			// gets in. Nothing in the daemon does this; it shows what
			// the events are for.
			h.exes.mu.Lock()
			h.exes.onEvent = func(ev *cnproc.Event) {
				if ev.What != cnproc.Exec {
					h.exes.apply(ev)
				}
			}
			h.exes.mu.Unlock()
			defer func() {
				h.exes.mu.Lock()
				h.exes.onEvent = h.exes.apply
				h.exes.mu.Unlock()
			}()
			r = sh(t, script)
			if r.err != nil {
				t.Fatalf("with exec events withheld cat was still denied (%v: %s): the first run did not show the events at work", r.err, r.out)
			}
		})
	}
}

func containsLine(out, line string) bool {
	for _, l := range splitLines(out) {
		if l == line {
			return true
		}
	}
	return false
}

func splitLines(s string) []string {
	var ls []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		ls = append(ls, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return ls
}

// TestExeCacheFlushes: the cache forgets everything when an event may
// have been lost: a CPU's first event, a gap in a CPU's numbering;
// exits, execs, forks and renames forget their process.
func TestExeCacheFlushes(t *testing.T) {
	c := &exeCache{m: map[int32]exeEntry{}, max: 4}
	c.onEvent = c.apply
	fill := func() {
		for pid := int32(1); pid <= 3; pid++ {
			c.store(pid, exeEntry{id: devIno{1, uint64(pid)}})
		}
	}
	ev := func(w cnproc.What, cpu, seq uint32, tgid int32) {
		c.apply(&cnproc.Event{What: w, CPU: cpu, Seq: seq, PID: tgid, TGID: tgid})
	}
	fill()
	ev(cnproc.UID, 0, 10, 1)
	if len(c.m) != 0 {
		t.Fatalf("a CPU's first event kept %d entries", len(c.m))
	}
	fill()
	ev(cnproc.UID, 0, 11, 1) // in sequence, a kind that changes nothing
	if len(c.m) != 3 {
		t.Fatalf("an in-sequence UID event left %d entries", len(c.m))
	}
	for _, w := range []cnproc.What{cnproc.Exec, cnproc.Exit, cnproc.Fork, cnproc.Comm} {
		fill()
		seq := c.seqs[0].next
		ev(w, 0, seq, 2)
		if _, ok := c.m[2]; ok || len(c.m) != 2 {
			t.Fatalf("%#x: entries %v", uint32(w), c.m)
		}
	}
	fill()
	ev(cnproc.None, 0, 999, 0) // an acknowledgement: not numbered by the CPU
	if len(c.m) != 3 {
		t.Fatalf("an acknowledgement flushed the cache")
	}
	seq := c.seqs[0].next
	ev(cnproc.UID, 0, seq+1, 1) // one number skipped: an event was lost
	if len(c.m) != 0 || c.gaps.Load() != 1 {
		t.Fatalf("a gap left %d entries (gaps %d)", len(c.m), c.gaps.Load())
	}
	fill()
	ev(cnproc.UID, 0, seq+2, 1)
	if len(c.m) != 3 {
		t.Fatal("the numbering was not followed after the gap")
	}
	ev(cnproc.UID, 5, 0, 1) // another CPU's first event
	if len(c.m) != 0 {
		t.Fatal("another CPU's first event kept the entries")
	}
	// The numbering wraps.
	c.seqs[0].next = ^uint32(0)
	ev(cnproc.UID, 0, ^uint32(0), 1)
	fill()
	ev(cnproc.UID, 0, 0, 1)
	if len(c.m) != 3 {
		t.Fatal("wrapping numbers taken for a gap")
	}
	// Bounded.
	c.store(4, exeEntry{})
	c.store(5, exeEntry{})
	if len(c.m) > 4 {
		t.Fatalf("%d entries past the bound of 4", len(c.m))
	}
}
