package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

func requireExeCache(t *testing.T, h *harness) {
	t.Helper()
	if !h.exes.on.Load() {
		skipNoCounter(t)
	}
}

func skipNoCounter(t *testing.T) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal("the exec counter cannot be loaded here (see the engine's log); CI runs as root on a kernel with BPF, where it must")
	}
	t.Skip("the exec counter cannot be loaded here: the executable cache is off")
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

// stepShell starts sh running script with a pipe on its stdin, so that
// the test decides when it goes on (the script reads a line).
func stepShell(t *testing.T, script string) (c *exec.Cmd, step io.WriteCloser, out *strings.Builder) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	c = exec.CommandContext(ctx, "sh", "-c", script)
	out = &strings.Builder{}
	c.Stdin, c.Stdout, c.Stderr = r, out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	return c, w, out
}

// cachedEntry waits until the cache holds an entry for pid.
func cachedEntry(t *testing.T, h *harness, pid int32) *exeEntry {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.exes.mu.Lock()
		en := h.exes.m[pid]
		h.exes.mu.Unlock()
		if en != nil {
			return en
		}
		if time.Now().After(deadline) {
			t.Fatalf("no cache entry for pid %d", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
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
			script := fmt.Sprintf(": < %[1]s && : < %[1]s && echo shell-read && read x && exec %[2]s -c 'read y; read z < %[1]s && echo bash-read'", secret, bash)

			for _, forget := range []bool{false, true} {
				hits := h.exes.hits.Load()
				c, step, out := stepShell(t, script)
				pid := int32(c.Process.Pid)
				en := cachedEntry(t, h, pid)
				step.Write([]byte("go\n"))
				eventually(t, "the exec of bash", func() error {
					var b [4096]byte
					if exe, _ := h.proc.ReadExe(pid, b[:]); string(exe) != bash {
						return fmt.Errorf("exe %q", exe)
					}
					return nil
				})
				if forget {
					h.exes.mu.Lock()
					en.gen = h.exes.gen.Gen(pid)
					h.exes.mu.Unlock()
				}
				step.Write([]byte("go\n"))
				step.Close()
				err := c.Wait()
				if !strings.Contains(out.String(), "shell-read") {
					t.Fatalf("the allowed shell was not let in: %v: %s", err, out)
				}
				if h.exes.hits.Load() == hits {
					t.Fatal("no decision came from the cache: the test shows nothing")
				}
				if !forget {
					if strings.Contains(out.String(), "bash-read") {
						t.Fatalf("bash, exec'd by an allowed shell, read the file: %s", out)
					}
					mustDeny(t, res{out.String(), err})
					ev := h.rec.waitFor(t, "denied bash", kind(fsmon.KindDenied, secret))
					if ev.Process.ExecutablePath != bash {
						t.Errorf("denied %s, want %s", ev.Process.ExecutablePath, bash)
					}
				} else if !strings.Contains(out.String(), "bash-read") {
					t.Fatalf("with the exec not counted bash was still denied (%v: %s): the first run did not show the count at work", err, out)
				}
			}
		})
	}
}

// TestExitMakesEntryStale: an entry for a process that has exited is
// never used again, so its pid, reused, starts afresh.
func TestExitMakesEntryStale(t *testing.T) {
	c := testExeCache(t, 16)
	k := exec.Command("sleep", "30")
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	pid := int32(k.Process.Pid)
	c.begin()
	defer c.end(true)
	if c.fill(pid) == nil || c.lookup(pid) == nil {
		t.Fatal("a live process was not cached")
	}
	k.Process.Kill()
	k.Wait()
	if c.lookup(pid) != nil {
		t.Fatal("the entry of an exited process was used")
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
	c, step, out := stepShell(t, fmt.Sprintf(": < %[1]s && : < %[1]s && read x && exec cat %[1]s", secret))
	pid := int32(c.Process.Pid)
	isPID := func(exe string) func(*fsmon.Event) bool {
		return func(ev *fsmon.Event) bool {
			return ev.Kind == fsmon.KindViolation && ev.Process.PID == pid && ev.Process.ExecutablePath == exe
		}
	}
	h.rec.waitFor(t, "the shell's violation", isPID("/usr/bin/dash"))
	step.Write([]byte("go\n"))
	step.Close()
	if err := c.Wait(); err != nil {
		t.Fatalf("monitor mode denied: %v: %s", err, out)
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
	var kids []*exec.Cmd
	for i := 0; i < 12; i++ {
		k := exec.Command("sleep", "30")
		if err := k.Start(); err != nil {
			t.Fatal(err)
		}
		kids = append(kids, k)
	}
	defer func() {
		for _, k := range kids {
			k.Process.Kill()
			k.Wait()
		}
	}()
	pid := func(i int) int32 { return int32(kids[i].Process.Pid) }
	c.begin()
	defer c.end(true)
	for i := 0; i < 8; i++ {
		if c.fill(pid(i)) == nil {
			t.Fatalf("pid %d not cached", pid(i))
		}
	}
	// Four gone: the next fill drops them and keeps the four alive.
	for i := 0; i < 4; i++ {
		kids[i].Process.Kill()
		kids[i].Wait()
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
	sh, step, _ := stepShell(t, "read x; exec sleep 30")
	defer sh.Process.Kill()
	pid := int32(sh.Process.Pid)
	c.afterStat = func(int32) {
		step.Write([]byte("go\n"))
		step.Close()
		eventually(t, "the exec of sleep", func() error {
			var b [4096]byte
			if exe, _ := c.fs.ReadExe(pid, b[:]); string(exe) != "/usr/bin/sleep" {
				return fmt.Errorf("exe %q", exe)
			}
			return nil
		})
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
