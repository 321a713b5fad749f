package engine

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/procinfo"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
)

// TestDecisionStartsFromZero: one decision's facts never reach the next
// one made with the same scratch space. A reported, allowed open by one
// process (names read, report facts filled), then an open by an outsider
// of the same file, then an open of a file no rule covers: each gets its
// own answer and its own facts, and reset leaves nothing behind.
func TestDecisionStartsFromZero(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	other := filepath.Join(dir, "other")
	writeFile(t, secret, "s")
	writeFile(t, other, "o")
	h := start(t, fmt.Sprintf(`
profiles:
  - name: t
    host: true
    mode: protect
    filters:
      - name: secret
        path: %s
        behavior: block
        report_access: true
        allow: [sleep]
`, secret))
	sleeper := exec.Command("sleep", "60")
	outsider := exec.Command("tail", "-f", "/dev/null")
	for _, c := range []*exec.Cmd{sleeper, outsider} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
	open := func(p string) *os.File {
		f, err := os.Open(p) // our own open: answered at once
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	fs, fo := open(secret), open(other)
	var d decision
	decide := func(f *os.File, pid int) {
		h.decide(&permSlot{fd: int32(f.Fd()), pid: int32(pid), mask: fanotify.OpenPerm}, &d)
	}

	decide(fs, sleeper.Process.Pid)
	if d.kind != fsmon.KindAccess || d.verdict() != fanotify.Allow || d.proc.PID != int32(sleeper.Process.Pid) || !d.subject.NamesKnown || d.path != secret {
		t.Fatalf("allowed by name: kind %v verdict %v facts %+v", d.kind, d.verdict(), d.facts)
	}
	decide(fs, outsider.Process.Pid)
	if d.kind != fsmon.KindDenied || d.verdict() != fanotify.Deny || d.proc.PID != int32(outsider.Process.Pid) || d.proc.ExecutableName != "tail" {
		t.Fatalf("the outsider after an allowed opener: kind %v verdict %v process %+v", d.kind, d.verdict(), d.proc)
	}
	decide(fo, sleeper.Process.Pid)
	if d.kind != 0 || d.verdict() != fanotify.Allow || d.proc != (fsmon.Process{}) || d.path != "" || d.subject.NamesKnown || d.rule.Rule != nil || d.group != nil {
		t.Fatalf("an uncovered file after a denied open kept facts: %+v", d.facts)
	}
	d.reset(42)
	if d.who.PID != 42 || d.who.Cached != d.cached {
		t.Fatalf("reset for pid 42: opener %+v", d.who)
	}
	d.who = procinfo.Opener{}
	if !reflect.ValueOf(d.facts).IsZero() || len(d.rules) != 0 {
		t.Fatalf("reset left facts: %+v, rules %d", d.facts, len(d.rules))
	}
}
