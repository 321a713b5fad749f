package engine

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/testutil/stepper"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// The executable cache turns itself off, and says so in the log, when
// the exec counter cannot be loaded, when the kernel reports it skipped
// the counting program, and when --permission.exe-cache=off asks. Each
// test checks the log line the README quotes and that decisions are
// still right: an allowed shell is let in, the bash it execs in place is
// not (the case a cache gets wrong), and no decision comes from a cache.

// logLines is a log, as the daemon writes it (text), that a test can
// wait on.
type logLines struct {
	mu  sync.Mutex
	b   strings.Builder
	new chan struct{}
}

func newLogLines() *logLines { return &logLines{new: make(chan struct{}, 1)} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.b.Write(p)
	l.mu.Unlock()
	select {
	case l.new <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logLines) option(o *Options) {
	o.Logger = slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// line returns the first line that contains want, which must be there
// already (New logs how the cache starts before it returns).
func (l *logLines) line(t *testing.T, want string) string {
	t.Helper()
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, want) {
			return line
		}
	}
	t.Fatalf("no log line with %s; the log:\n%s", want, l.String())
	return ""
}

// waitFor returns the first line that contains want, waiting for it.
func (l *logLines) waitFor(t *testing.T, want string) string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		for _, line := range strings.Split(l.String(), "\n") {
			if strings.Contains(line, want) {
				return line
			}
		}
		select {
		case <-l.new:
		case <-deadline:
			t.Fatalf("no log line with %s; the log:\n%s", want, l.String())
		}
	}
}

// shellProtects is a protected file that only /bin/sh may open.
func shellProtects(t *testing.T) (yaml, secret string) {
	secret = filepath.Join(t.TempDir(), "secret")
	writeFile(t, secret, "s\n")
	return blockFile("protect", secret, "/bin/sh"), secret
}

// decidesWithoutCache checks, with the cache off, that an allowed shell
// opening the file twice is let in, that bash, exec'd by it in the same
// process, is denied, that cat is denied, and that no decision came from
// the cache.
func decidesWithoutCache(t *testing.T, h *harness, secret string) {
	t.Helper()
	bash := testroot.RequireCommand(t, "bash")
	if h.exes.On() {
		t.Fatal("the executable cache is on")
	}
	hits := h.exes.Hits()
	s := stepper.Shell(t, fmt.Sprintf(": < %[1]s && : < %[1]s && echo shell-read && read x && exec %[2]s -c 'echo bash-up; read y; read z < %[1]s && echo bash-read'", secret, bash))
	s.Expect(t, "shell-read")
	s.Send(t, "go")
	s.Expect(t, "bash-up")
	s.Send(t, "go")
	out, err := s.Finish(t)
	r := res{out, err}
	if strings.Contains(r.out, "bash-read") {
		t.Fatalf("bash, exec'd by an allowed shell, read the file: %s", r.out)
	}
	mustDeny(t, r)
	mustDeny(t, cmd(t, "cat", secret))
	if n := h.exes.Hits() - hits; n != 0 {
		t.Fatalf("%d decisions came from the executable cache, which is off", n)
	}
}

// TestExeCacheOffByOption: --permission.exe-cache=off (ExeCacheOff).
func TestExeCacheOffByOption(t *testing.T) {
	yaml, secret := shellProtects(t)
	log := newLogLines()
	h := start(t, yaml, log.option, func(o *Options) { o.ExeCache = ExeCacheOff })
	log.line(t, `level=INFO msg="executable cache off (--permission.exe-cache=off)"`)
	decidesWithoutCache(t, h, secret)
}

// TestExeCacheOffWithoutCounter: the counter cannot be loaded. The test
// makes that true for the engine it starts: its goroutine, locked to its
// thread for good (Go ends the thread with the goroutine), gets a
// seccomp filter that fails every BPF_PROG_LOAD with EPERM, as a
// container without CAP_BPF or under Docker's default profile sees.
func TestExeCacheOffWithoutCounter(t *testing.T) {
	testroot.Require(t)
	denyBPFProgLoad(t)
	yaml, secret := shellProtects(t)
	log := newLogLines()
	h := start(t, yaml, log.option)
	line := log.line(t, `level=WARN msg="exec counter unavailable: allow lists read /proc/PID/exe at every decision" err=`)
	if !strings.Contains(line, "loading the exec counter program") || !strings.Contains(line, "operation not permitted") {
		t.Errorf("the warning does not give the reason: %s", line)
	}
	decidesWithoutCache(t, h, secret)
}

// TestExeCacheOffWhenKernelSkips: the kernel reports it skipped the
// counting program (fakeSkips stands in for its count: the program does
// not recurse, so the kernel cannot be made to skip it). The cache drops
// its entries and is off from then on.
func TestExeCacheOffWhenKernelSkips(t *testing.T) {
	yaml, secret := shellProtects(t)
	log := newLogLines()
	h := start(t, yaml, log.option)
	requireExeCache(t, h)
	log.line(t, `level=INFO msg="executable cache on: execs, exits and renames counted by a BPF program"`)
	// An entry, used: the shell's second open came from it.
	hits := h.exes.Hits()
	s := stepper.Shell(t, fmt.Sprintf(": < %[1]s && : < %[1]s && echo shell-read && read x", secret))
	s.Expect(t, "shell-read")
	if h.exes.Hits() == hits {
		t.Fatal("no decision came from the cache: the test shows nothing")
	}

	h.exes.FakeSkips(1)
	log.waitFor(t, `level=ERROR msg="the kernel skipped the exec counting program; the executable cache is off from now on" skipped=1`)
	n := h.exes.Len()
	if n != 0 {
		t.Errorf("%d entries kept after the cache turned off", n)
	}
	s.Send(t, "go")
	if out, err := s.Finish(t); err != nil {
		t.Fatalf("the shell: %v: %s", err, out)
	}
	decidesWithoutCache(t, h, secret)
}

// denyBPFProgLoad makes bpf(BPF_PROG_LOAD, ...) fail with EPERM on the
// calling goroutine's thread, which it locks for good.
func denyBPFProgLoad(t *testing.T) {
	t.Helper()
	arch, ok := map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64}[runtime.GOARCH]
	if !ok {
		testroot.Unavailable(t, "this test knows no seccomp architecture for %s", runtime.GOARCH)
	}
	// struct seccomp_data: nr at 0, arch at 4, args[0] at 16 (its low
	// half, on these little-endian machines).
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 4},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: arch, Jf: 5},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.SYS_BPF, Jf: 3},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 16},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.BPF_PROG_LOAD, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
		t.Fatalf("installing the seccomp filter: %v", err)
	}
}
