package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/execgen"
	"github.com/fsmon/fsmon_exporter/testutil/stepper"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

func requireExeCache(t *testing.T, h *harness) {
	t.Helper()
	if !h.exes.On() {
		skipNoCounter(t)
	}
}

// skipNoCounter skips (fails under CI) a test that needs the exec
// counter, with the reason it cannot be loaded.
func skipNoCounter(t *testing.T) {
	t.Helper()
	g, err := execgen.Open()
	if err != nil {
		testroot.Unavailable(t, "the exec counter cannot be loaded here, so the executable cache is off: %v", err)
		return
	}
	g.Close()
	t.Fatal("the exec counter loads, yet the executable cache is off")
}

// TestExecInPlaceIsJudgedAfresh: a process the allow list lets in (a
// shell, dash, by path or by name) opens the file twice, so that the
// second decision comes from the cache, then execs, in the same process,
// bash, which the list does not name, and bash opens the file itself.
// That open must be denied. The same run with the entry's count set to
// the slot's count after the exec (as if the exec had not been counted)
// lets bash in, which shows the denial comes from the count.
func TestExecInPlaceIsJudgedAfresh(t *testing.T) {
	bash := testroot.RequireCommand(t, "bash")
	for _, allow := range []string{"/bin/sh", "sh"} {
		t.Run(allow, func(t *testing.T) {
			dir := t.TempDir()
			secret := filepath.Join(dir, "secret")
			writeFile(t, secret, "s\n")
			h := start(t, blockFile("protect", secret, allow))
			requireExeCache(t, h)
			script := fmt.Sprintf(": < %[1]s && : < %[1]s && echo shell-read && read x && exec %[2]s -c 'echo bash-up; read y; read z < %[1]s && echo bash-read'", secret, bash)

			for _, forget := range []bool{false, true} {
				hits := h.exes.Hits()
				s := stepper.Shell(t, script)
				pid := s.PID()
				// Both opens were decided before the shell printed: the
				// first filled the entry, the second read it.
				s.Expect(t, "shell-read")
				if h.exes.Cached(pid) == nil {
					t.Fatalf("the allowed shell's opens left no cache entry for pid %d", pid)
				}
				if h.exes.Hits() == hits {
					t.Fatal("no decision came from the cache: the test shows nothing")
				}
				s.Send(t, "go")
				s.Expect(t, "bash-up") // bash runs: its exec is counted
				if forget {
					h.exes.ForgetExecs(pid)
				}
				s.Send(t, "go")
				out, err := s.Finish(t)
				r := res{out, err}
				if !forget {
					if strings.Contains(r.out, "bash-read") {
						t.Fatalf("bash, exec'd by an allowed shell, read the file: %s", r.out)
					}
					mustDeny(t, r)
					ev := h.rec.waitFor(t, "denied bash", func(ev *fsmon.Event) bool {
						return kind(fsmon.KindDenied, secret)(ev) && ev.Process.PID == pid
					})
					if ev.Process.ExecutablePath != bash {
						t.Errorf("denied %s, want %s", ev.Process.ExecutablePath, bash)
					}
				} else if !strings.Contains(r.out, "bash-read") {
					t.Fatalf("with the exec not counted bash was still denied (%v: %s): the first run did not show the count at work", r.err, r.out)
				}
			}
		})
	}
}

// TestReportsAfterExecAreFresh: in monitor mode a shell's violation is
// reported (its facts cached), then it execs cat in the same process;
// cat's violation must name cat, its command line, and the parent.
func TestReportsAfterExecAreFresh(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s\n")
	h := start(t, protectFile("monitor", secret))
	requireExeCache(t, h)
	s := stepper.Shell(t, fmt.Sprintf(": < %[1]s && : < %[1]s && read x && exec cat %[1]s", secret))
	pid := s.PID()
	isPID := func(exe string) func(*fsmon.Event) bool {
		return func(ev *fsmon.Event) bool {
			return ev.Kind == fsmon.KindViolation && ev.Process.PID == pid && ev.Process.ExecutablePath == exe
		}
	}
	h.rec.waitFor(t, "the shell's violation", isPID("/usr/bin/dash"))
	s.Send(t, "go")
	if out, err := s.Finish(t); err != nil {
		t.Fatalf("monitor mode denied: %v: %s", err, out)
	}
	ev := h.rec.waitFor(t, "cat's violation", isPID("/usr/bin/cat"))
	p := ev.Process
	if p.ExecutableName != "cat" || p.CommandLine != "cat "+secret || p.ParentPID != int32(os.Getpid()) || p.UserID != int64(os.Geteuid()) {
		t.Errorf("cat's facts after the exec: %+v", p)
	}
}
