package engine

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/execgen"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

func requireExeCache(t *testing.T, h *harness) {
	t.Helper()
	if !h.exes.on.Load() {
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

// testExeCache is a cache of its own with room for max entries, closed
// when the test ends.
func testExeCache(t *testing.T, max int) *exeCache {
	t.Helper()
	testroot.Require(t)
	c := newExeCache(slog.New(slog.DiscardHandler), ExeCacheOn, proc.FS{Root: "/proc"}, max)
	if !c.on.Load() {
		skipNoCounter(t)
	}
	t.Cleanup(c.close)
	return c
}

// A stepper is a child process driven line by line: the test writes to
// its stdin and reads what it prints (stdout and stderr), so that it
// knows how far the child got. A line printed by a program proves its
// exec has returned, hence been counted (sched_process_exec runs inside
// execve); the return of Start does not: it comes when the exec closes
// the close-on-exec pipe of os/exec, before the tracepoint.
type stepper struct {
	cmd  *exec.Cmd
	in   *os.File
	out  *os.File
	r    *bufio.Reader
	seen strings.Builder
}

func startStepper(t *testing.T, name string, args ...string) *stepper {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &stepper{cmd: exec.Command(name, args...), in: inW, out: outR, r: bufio.NewReader(outR)}
	s.cmd.Stdin, s.cmd.Stdout, s.cmd.Stderr = inR, outW, outW
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	outW.Close()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		inW.Close()
		outR.Close()
	})
	return s
}

// stepShell starts sh running script.
func stepShell(t *testing.T, script string) *stepper {
	t.Helper()
	return startStepper(t, "sh", "-c", script)
}

func (s *stepper) pid() int32 { return int32(s.cmd.Process.Pid) }

// send writes a line to the child's stdin.
func (s *stepper) send(t *testing.T, line string) {
	t.Helper()
	if _, err := s.in.WriteString(line + "\n"); err != nil {
		t.Fatalf("writing to pid %d: %v", s.pid(), err)
	}
}

// expect reads what the child prints until a line equal to want.
func (s *stepper) expect(t *testing.T, want string) {
	t.Helper()
	s.out.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := s.r.ReadString('\n')
		s.seen.WriteString(line)
		if strings.TrimSuffix(line, "\n") == want {
			return
		}
		if err != nil {
			t.Fatalf("pid %d did not print %q: %v; it printed: %s", s.pid(), want, err, s.seen.String())
		}
	}
}

// finish closes the child's stdin, reads the rest of what it prints
// and waits for it: all it printed, and how it ended.
func (s *stepper) finish(t *testing.T) res {
	t.Helper()
	s.in.Close()
	s.out.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(&s.seen, s.r); err != nil {
		t.Fatalf("pid %d did not end: %v; it printed: %s", s.pid(), err, s.seen.String())
	}
	err := s.cmd.Wait()
	return res{s.seen.String(), err}
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
			script := fmt.Sprintf(": < %[1]s && : < %[1]s && echo shell-read && read x && exec %[2]s -c 'echo bash-up; read y; read z < %[1]s && echo bash-read'", secret, bash)

			for _, forget := range []bool{false, true} {
				hits := h.exes.hits.Load()
				s := stepShell(t, script)
				pid := s.pid()
				// Both opens were decided before the shell printed: the
				// first filled the entry, the second read it.
				s.expect(t, "shell-read")
				h.exes.mu.Lock()
				en := h.exes.m[pid]
				h.exes.mu.Unlock()
				if en == nil {
					t.Fatalf("the allowed shell's opens left no cache entry for pid %d", pid)
				}
				if h.exes.hits.Load() == hits {
					t.Fatal("no decision came from the cache: the test shows nothing")
				}
				s.send(t, "go")
				s.expect(t, "bash-up") // bash runs: its exec is counted
				if forget {
					h.exes.mu.Lock()
					en.gen = h.exes.gen.Gen(pid)
					h.exes.mu.Unlock()
				}
				s.send(t, "go")
				r := s.finish(t)
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

// TestExitMakesEntryStale: an entry for a process that has exited is
// never used again, so its pid, reused, starts afresh.
func TestExitMakesEntryStale(t *testing.T) {
	c := testExeCache(t, 16)
	s := stepShell(t, "echo ready; read x")
	s.expect(t, "ready") // the shell runs: its exec is counted
	pid := s.pid()
	c.begin()
	defer c.end(true)
	if c.fill(pid) == nil || c.lookup(pid) == nil {
		t.Fatal("a live process was not cached")
	}
	s.cmd.Process.Kill()
	s.cmd.Wait() // reaped, so its exit (counted inside do_exit) is behind us
	if c.lookup(pid) != nil {
		t.Fatal("the entry of an exited process was used")
	}
}

// TestExitingProcessIsNotCached: a process that has begun to exit is
// not cached, because its exit is counted before its executable is gone
// (Linux 6.16 moved the exit tracepoint before exit_mm): an entry filled
// in between would keep the final count and pass for whatever process
// gets the pid next. User space cannot hold a process in that window, so
// the test exits it between the stat of its executable and the check
// (the hook afterStat), and keeps it a zombie, PF_EXITING set, its pid
// not reused.
func TestExitingProcessIsNotCached(t *testing.T) {
	c := testExeCache(t, 16)
	s := stepShell(t, "echo ready; read x")
	s.expect(t, "ready")
	pid := s.pid()
	exited := false
	c.afterStat = func(int32) {
		s.cmd.Process.Kill()
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_PID, int(pid), &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
			t.Fatalf("waitid: %v", err)
		}
		exited = true
	}
	c.begin()
	defer c.end(true)
	en := c.fill(pid)
	if !exited {
		t.Fatal("fill did not reach the hook: the executable of a live process could not be read")
	}
	if en != nil || c.m[pid] != nil {
		t.Fatal("a process that had begun to exit was cached")
	}
	s.cmd.Wait()
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
	s := stepShell(t, fmt.Sprintf(": < %[1]s && : < %[1]s && read x && exec cat %[1]s", secret))
	pid := s.pid()
	isPID := func(exe string) func(*fsmon.Event) bool {
		return func(ev *fsmon.Event) bool {
			return ev.Kind == fsmon.KindViolation && ev.Process.PID == pid && ev.Process.ExecutablePath == exe
		}
	}
	h.rec.waitFor(t, "the shell's violation", isPID("/usr/bin/dash"))
	s.send(t, "go")
	if r := s.finish(t); r.err != nil {
		t.Fatalf("monitor mode denied: %v: %s", r.err, r.out)
	}
	ev := h.rec.waitFor(t, "cat's violation", isPID("/usr/bin/cat"))
	p := ev.Process
	if p.ExecutableName != "cat" || p.CommandLine != "cat "+secret || p.ParentPID != int32(os.Getpid()) || p.UserID != int64(os.Geteuid()) {
		t.Errorf("cat's facts after the exec: %+v", p)
	}
}

// TestExeCacheIsBounded: past its bound the cache drops the entries of
// processes gone (keeping the live ones), then, if that is not enough,
// everything; each entry holds an fd.
func TestExeCacheIsBounded(t *testing.T) {
	c := testExeCache(t, 8)
	var kids []*stepper
	for i := 0; i < 12; i++ {
		k := stepShell(t, "echo ready; read x")
		k.expect(t, "ready") // running: its exec is counted
		kids = append(kids, k)
	}
	pid := func(i int) int32 { return kids[i].pid() }
	c.begin()
	defer c.end(true)
	for i := 0; i < 8; i++ {
		if c.fill(pid(i)) == nil {
			t.Fatalf("pid %d not cached", pid(i))
		}
	}
	// Four gone: the next fill drops them and keeps the four alive.
	for i := 0; i < 4; i++ {
		kids[i].cmd.Process.Kill()
		kids[i].cmd.Wait()
	}
	c.fill(pid(8))
	if len(c.m) != 5 {
		t.Fatalf("%d entries after an eviction of 4 gone, want 5", len(c.m))
	}
	for i := 4; i <= 8; i++ {
		if c.lookup(pid(i)) == nil {
			t.Fatalf("the live pid %d lost its entry", pid(i))
		}
	}
	// Full of live ones: everything goes, the bound holds.
	for i := 9; i < 12; i++ {
		c.fill(pid(i))
	}
	if len(c.m) > 8 {
		t.Fatalf("%d entries past the bound of 8", len(c.m))
	}
}

// TestExecAfterStatMakesEntryStale: an exec between the stat of the
// executable and the entry's first use makes the entry stale, because
// the count was taken before the stat.
func TestExecAfterStatMakesEntryStale(t *testing.T) {
	c := testExeCache(t, 16)
	s := stepShell(t, "echo ready; read x; exec cat")
	s.expect(t, "ready")
	pid := s.pid()
	c.afterStat = func(int32) {
		// The shell reads its line byte by byte and execs cat, which
		// echoes the next line: cat runs, its exec is counted.
		s.send(t, "go")
		s.send(t, "cat-up")
		s.expect(t, "cat-up")
	}
	c.begin()
	defer c.end(true)
	if c.fill(pid) == nil {
		t.Fatal("the shell was not cached")
	}
	if c.lookup(pid) != nil {
		t.Fatal("an entry read before an exec was used after it")
	}
}
