package engine

import (
	"context"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/testutil/stepper"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// quickWriterEnv, set, makes the test binary a writer that appends to
// the file it names and exits at once: no clean-up, no runtime shutdown
// between its write and its exit.
const quickWriterEnv = "FSMON_TEST_QUICK_WRITE"

// quickStayEnv, set with it, makes the writer wait for its stdin to
// close after its write.
const quickStayEnv = "FSMON_TEST_QUICK_STAY"

// quickUIDEnv, set with it, makes the writer take that uid and gid
// after it has opened the file, before it writes.
const quickUIDEnv = "FSMON_TEST_QUICK_UID"

func quickWrite(path string) int {
	fd, err := syscall.Open(path, syscall.O_WRONLY|syscall.O_APPEND, 0)
	if err != nil {
		return 2
	}
	if uid := os.Getenv(quickUIDEnv); uid != "" {
		// A daemon's worker dropping its privileges: no exec after it.
		n, _ := strconv.Atoi(uid)
		if syscall.Setgid(n) != nil || syscall.Setuid(n) != nil {
			return 4
		}
	}
	if _, err := syscall.Write(fd, []byte("q\n")); err != nil {
		return 3
	}
	if os.Getenv(quickStayEnv) != "" {
		var b [1]byte
		syscall.Read(0, b[:]) // until the test closes stdin
	}
	syscall.Exit(0)
	return 0
}

// busyLoad keeps both CPUs busy for the rest of the test: two shells
// spinning, so that the daemon's readers compete for the CPU with them,
// as on a loaded machine.
func busyLoad(t *testing.T) {
	t.Helper()
	for i := 0; i < 2; i++ {
		c := exec.Command("sh", "-c", "while :; do :; done")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	}
}

// holdChanges makes the notification loop wait, before it handles what
// it has read, while the returned lock is held: a change made while the
// test holds it is read after its writer has exited and been reaped.
func holdChanges(h *harness) *gate {
	g := newGate()
	f := g.pass
	h.holdNotify.Store(&f)
	return g
}

// gate holds whoever passes it while it is locked.
type gate struct{ ch atomic.Pointer[chan struct{}] }

func newGate() *gate {
	g := &gate{}
	c := make(chan struct{})
	close(c)
	g.ch.Store(&c)
	return g
}

// Lock holds those who come to the gate from now on.
func (g *gate) Lock() {
	c := make(chan struct{})
	g.ch.Store(&c)
}

// Unlock lets them through.
func (g *gate) Unlock() { close(*g.ch.Load()) }

// pass waits while the gate is locked.
func (g *gate) pass() { <-*g.ch.Load() }

// requireTable makes the test unavailable where the process table
// cannot be loaded.
func requireTable(t *testing.T, h *harness) {
	t.Helper()
	if h.procs == nil {
		testroot.Unavailable(t, "the process table's BPF programs do not load here")
	}
}

// self is what the test binary's children see of their parent.
type self struct {
	pid                int32
	exe, comm, cmdline string
}

func readSelf(t *testing.T) self {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	comm, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		t.Fatal(err)
	}
	cmdline, err := os.ReadFile("/proc/self/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	return self{int32(os.Getpid()), exe, strings.TrimSpace(string(comm)), strings.ReplaceAll(strings.TrimRight(string(cmdline), "\x00"), "\x00", " ")}
}

// runGone runs c to its end while the notification loop is held, and
// checks that its process is gone (reaped) before the loop may read its
// change.
func runGone(t *testing.T, hold sync.Locker, c *exec.Cmd) int32 {
	t.Helper()
	hold.Lock()
	defer hold.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		<-ctx.Done()
		if c.Process != nil && ctx.Err() == context.DeadlineExceeded {
			c.Process.Kill()
		}
	}()
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v: %s", c.Args, err, out)
	}
	pid := int32(c.Process.Pid)
	if _, err := os.Stat("/proc/" + strconv.Itoa(int(pid))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pid %d still in /proc after it was reaped: %v", pid, err)
	}
	return pid
}

// mustName checks every key of a report that names the process and its
// parent.
func mustName(t *testing.T, what string, p fsmon.Process, exe, comm, cmdline, userName string, parent self) {
	t.Helper()
	var bad []string
	check := func(key, got, want string) {
		if got != want {
			bad = append(bad, key+"="+strconv.Quote(got)+" want "+strconv.Quote(want))
		}
	}
	check("process.executable.path", p.ExecutablePath, exe)
	check("process.executable.name", p.ExecutableName, comm)
	check("process.command_line", p.CommandLine, cmdline)
	check("process.user.name", p.UserName, userName)
	check("process.parent.executable.path", p.ParentExecutablePath, parent.exe)
	check("process.parent.executable.name", p.ParentExecutableName, parent.comm)
	check("process.parent.command_line", p.ParentCommandLine, parent.cmdline)
	if p.UserID != int64(os.Geteuid()) {
		bad = append(bad, "process.user.id="+strconv.FormatInt(p.UserID, 10))
	}
	if p.ParentPID != parent.pid {
		bad = append(bad, "process.parent_pid="+strconv.Itoa(int(p.ParentPID)))
	}
	if len(bad) > 0 {
		t.Errorf("%s: %s", what, strings.Join(bad, "; "))
	}
}

func realPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestChangeNamesExitedProcess: with both CPUs busy, each of these
// commands changes a watched file and has exited, been reaped, before
// the daemon reads its change: every change still names the process
// (executable, name, command line, user id and name) and its parent,
// from what the kernel recorded at its fork and exec.
func TestChangeNamesExitedProcess(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "watched")
	src := filepath.Join(dir, "src")
	writeFile(t, f, "a\n")
	writeFile(t, src, "b\n")
	h := start(t, "profiles:\n  - name: who\n    filters:\n      - path: "+f+"\n")
	requireTable(t, h)
	busyLoad(t)
	hold := holdChanges(h)
	parent := readSelf(t)
	root, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		t.Fatal(err)
	}
	testBin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		op    fsmon.Op
		args  []string
		stdin string
		exe   string
		env   []string
	}{
		{"sh", fsmon.OpWrite, []string{"sh", "-c", "echo x >> " + f}, "", realPath(t, "sh"), nil},
		{"tee", fsmon.OpWrite, []string{"tee", "-a", f}, "x\n", realPath(t, "tee"), nil},
		{"chmod", fsmon.OpAttrib, []string{"chmod", "600", f}, "", realPath(t, "chmod"), nil},
		{"chown", fsmon.OpAttrib, []string{"chown", "1:1", f}, "", realPath(t, "chown"), nil},
		{"touch", fsmon.OpAttrib, []string{"touch", f}, "", realPath(t, "touch"), nil},
		{"cp", fsmon.OpWrite, []string{"cp", src, f}, "", realPath(t, "cp"), nil},
		// Writes and exits within microseconds of its write.
		{"engine.test", fsmon.OpWrite, []string{testBin, "-test.run=^$"}, "", testBin, []string{quickWriterEnv + "=" + f}},
	} {
		c := exec.Command(tc.args[0], tc.args[1:]...)
		c.Stdin = strings.NewReader(tc.stdin)
		c.Env = append(os.Environ(), tc.env...)
		pid := runGone(t, hold, c)
		ev := h.rec.waitFor(t, tc.name+"'s change", func(ev *fsmon.Event) bool {
			return ev.Kind == fsmon.KindChange && ev.Op == tc.op && ev.Process.PID == pid
		})
		comm := tc.name
		if len(comm) > 15 {
			comm = comm[:15]
		}
		mustName(t, tc.name, ev.Process, tc.exe, comm, strings.Join(tc.args, " "), root.Username, parent)
	}
	// A parent gone too: the shell forks chmod, then exits; both are
	// reaped before the change is read.
	script := "chmod 644 " + f + "; exit 0"
	c := exec.Command("sh", "-c", script)
	sh := self{exe: realPath(t, "sh"), comm: "sh", cmdline: "sh -c " + script}
	sh.pid = runGone(t, hold, c)
	ev := h.rec.waitFor(t, "chmod's change under a gone shell", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindChange && ev.Op == fsmon.OpAttrib && ev.Process.ParentPID == sh.pid
	})
	mustName(t, "chmod under sh", ev.Process, realPath(t, "chmod"), "chmod", "chmod 644 "+f, root.Username, sh)
}

// TestContainerChangeNamesItsUser: with both CPUs busy, each of the
// commands, run in a container, has exited by the time its change is
// read: the change names it with the container's own /etc/passwd (uid 0
// is "croot" there), its executable as the container sees it, and its
// parent (nsenter, which entered the container).
func TestContainerChangeNamesItsUser(t *testing.T) {
	testroot.Require(t)
	root := busyboxRoot(t)
	for _, a := range []string{"tee", "chmod", "chown", "cp"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	// A static test binary (make test builds with CGO_ENABLED=0) is, in
	// the container, the writer that exits at once; a dynamic one has
	// no loader in the busybox root.
	testBin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	static := isStatic(t, testBin)
	if static {
		b, err := os.ReadFile(testBin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "bin", "quick"), b, 0o755); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Log("the test binary is dynamically linked (CGO_ENABLED=1): the writer that exits at once is left out in the container")
	}
	writeFile(t, filepath.Join(root, "etc", "passwd"), "croot:x:0:0::/:/bin/sh\n")
	writeFile(t, filepath.Join(root, "data", "f"), "a\n")
	writeFile(t, filepath.Join(root, "data", "src"), "b\n")
	h := startScanning(t, scanForTests, `
profiles:
  - name: c
    containers: {name: '{run}-who'}
    filters:
      - path: /data/f
`)
	requireTable(t, h)
	busyLoad(t)
	c := startContainer(t, root, "who", cgroupV2Docker)
	waitGroup(t, h, c, true)
	hold := holdChanges(h)
	for _, tc := range []struct {
		op    fsmon.Op
		comm  string
		exe   string
		args  []string
		stdin string
		env   string
	}{
		{fsmon.OpWrite, "sh", "/bin/busybox", []string{"sh", "-c", "echo x >> /data/f"}, "", ""},
		{fsmon.OpWrite, "tee", "/bin/busybox", []string{"tee", "-a", "/data/f"}, "x\n", ""},
		{fsmon.OpAttrib, "chmod", "/bin/busybox", []string{"chmod", "600", "/data/f"}, "", ""},
		{fsmon.OpAttrib, "chown", "/bin/busybox", []string{"chown", "1:1", "/data/f"}, "", ""},
		{fsmon.OpAttrib, "touch", "/bin/busybox", []string{"touch", "/data/f"}, "", ""},
		{fsmon.OpWrite, "cp", "/bin/busybox", []string{"cp", "/data/src", "/data/f"}, "", ""},
		{fsmon.OpWrite, "quick", "/bin/quick", []string{"/bin/quick", "-test.run=^$"}, "", quickWriterEnv + "=/data/f"},
	} {
		if tc.comm == "quick" && !static {
			continue
		}
		full := append([]string{"-t", strconv.Itoa(int(c.pid)), "-m", "-p", "-r", "-w", "--"}, tc.args...)
		n := exec.Command("nsenter", full...)
		n.Stdin = strings.NewReader(tc.stdin)
		n.Env = []string{"PATH=/bin"}
		if tc.env != "" {
			n.Env = append(n.Env, tc.env)
		}
		runGone(t, hold, n)
		ev := h.rec.waitFor(t, tc.comm+"'s change in the container", func(ev *fsmon.Event) bool {
			return ev.Kind == fsmon.KindChange && ev.Op == tc.op && ev.Container.ID == c.id && ev.Process.ExecutableName == tc.comm
		})
		p := ev.Process
		if p.UserName != "croot" || p.UserID != 0 || p.ExecutablePath != tc.exe || p.CommandLine != strings.Join(tc.args, " ") ||
			p.ParentExecutableName != "nsenter" || !strings.HasPrefix(p.ParentCommandLine, "nsenter -t") || p.ParentExecutablePath == "" || p.ParentPID <= 0 {
			t.Errorf("%v: %+v", tc.args, p)
		}
	}
}

// isStatic reports whether the ELF file p asks for no program
// interpreter.
func isStatic(t *testing.T, p string) bool {
	t.Helper()
	f, err := elf.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, ph := range f.Progs {
		if ph.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// TestDeniedNamesUserAndParent: a permission event names the opener's
// user and its parent too.
func TestDeniedNamesUserAndParent(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "secret")
	writeFile(t, f, "s\n")
	h := start(t, "profiles:\n  - name: who\n    mode: protect\n    filters:\n      - path: "+f+"\n        behavior: block\n        allow: [nobody-at-all]\n")
	busyLoad(t)
	parent := readSelf(t)
	c := exec.Command("cat", f)
	mustDeny(t, func() res { out, err := c.CombinedOutput(); return res{string(out), err} }())
	ev := h.rec.waitFor(t, "denied", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Process.PID == int32(c.Process.Pid)
	})
	root, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		t.Fatal(err)
	}
	mustName(t, "cat", ev.Process, realPath(t, "cat"), "cat", "cat "+f, root.Username, parent)
}

// TestWithoutTableReportsWhatProcGives: with the process table off, a
// change is named from /proc: complete for a process that still runs
// (its own facts, its user, its parent), the pid only for one gone.
func TestWithoutTableReportsWhatProcGives(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "watched")
	writeFile(t, f, "a\n")
	h := start(t, "profiles:\n  - name: who\n    filters:\n      - path: "+f+"\n", func(o *Options) { o.ProcessTable = ProcessTableOff })
	if h.procs != nil || h.Snapshot().ProcessTable != nil {
		t.Fatal("the process table is on with --process.table=off")
	}
	busyLoad(t)
	parent := readSelf(t)
	root, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		t.Fatal(err)
	}
	// Alive while its change is read: it waits for its stdin to close.
	script := "echo x >> " + f + "; read y"
	c := exec.Command("sh", "-c", script)
	stdin, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); c.Wait() }()
	ev := h.rec.waitFor(t, "the live shell's change", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindChange && ev.Process.PID == int32(c.Process.Pid)
	})
	mustName(t, "sh (alive)", ev.Process, realPath(t, "sh"), "sh", "sh -c "+script, root.Username, parent)

	hold := holdChanges(h)
	pid := runGone(t, hold, exec.Command("touch", f))
	ev = h.rec.waitFor(t, "the gone touch's change", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindChange && ev.Process.PID == pid
	})
	if ev.Process.ExecutablePath != "" || ev.Process.CommandLine != "" {
		t.Errorf("facts of a process gone before its change was read, without the table: %+v", ev.Process)
	}
}

// TestChangeWaitsForTheTable: a change read before the process table
// has applied its writer's records (the table's reader held back) waits
// for them: the writer, gone by then, is still named in full.
func TestChangeWaitsForTheTable(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "watched")
	writeFile(t, f, "a\n")
	h := start(t, "profiles:\n  - name: who\n    filters:\n      - path: "+f+"\n")
	requireTable(t, h)
	busyLoad(t)
	h.syncWait.Store(int64(time.Minute)) // the test, not the deadline, decides when the table catches up
	parent := readSelf(t)
	root, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		t.Fatal(err)
	}
	table := newGate()
	h.procs.HoldApply(table.pass)
	table.Lock()
	held := true
	defer func() {
		if held {
			table.Unlock()
		}
	}()
	hold := holdChanges(h)
	c := exec.Command("touch", f)
	pid := runGone(t, hold, c)
	// The loop has read the change and waits for the table.
	eventually(t, "the change waiting for the table", func() error {
		if h.procs.Waiting() == 0 {
			return errors.New("no Sync waiting")
		}
		return nil
	})
	table.Unlock()
	held = false
	ev := h.rec.waitFor(t, "touch's change", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindChange && ev.Process.PID == pid
	})
	mustName(t, "touch", ev.Process, realPath(t, "touch"), "touch", "touch "+f, root.Username, parent)
}

// TestStuckTableDoesNotHoldChanges: when the table's reader is stuck (a
// read of /proc that does not return), a change waits for it once, up
// to the deadline, and the changes after it do not wait again while it
// has not moved: they are reported from /proc.
func TestStuckTableDoesNotHoldChanges(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "watched")
	writeFile(t, f, "a\n")
	h := start(t, "profiles:\n  - name: who\n    filters:\n      - path: "+f+"\n")
	requireTable(t, h)
	h.syncWait.Store(int64(50 * time.Millisecond))
	stuck := make(chan struct{})
	defer close(stuck)
	h.procs.HoldApply(func() { <-stuck })
	for i := 0; i < 3; i++ {
		c := exec.Command("touch", f)
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("touch: %v %s", err, out)
		}
		h.rec.waitFor(t, "touch's change", func(ev *fsmon.Event) bool {
			return ev.Kind == fsmon.KindChange && ev.Process.PID == int32(c.Process.Pid)
		})
	}
	if n := h.procs.Lagged(); n != 1 {
		t.Fatalf("%d changes waited for the stuck reader until the deadline, want 1", n)
	}
}

// TestChangeOfProcessFromBeforeTheDaemon: a process that started before
// the daemon (no exec or fork of it was recorded) and exits right after
// its write is named from what /proc said of it at the daemon's start.
func TestChangeOfProcessFromBeforeTheDaemon(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "watched")
	writeFile(t, f, "a\n")
	script := "echo ready; read x; echo x >> " + f
	s := stepper.Shell(t, script)
	s.Expect(t, "ready")
	pid := s.PID()
	h := start(t, "profiles:\n  - name: who\n    filters:\n      - path: "+f+"\n")
	requireTable(t, h)
	busyLoad(t)
	eventually(t, "the table seeded from /proc", func() error {
		if !h.procs.Seeded() {
			return errors.New("not yet")
		}
		return nil
	})
	parent := readSelf(t)
	root, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		t.Fatal(err)
	}
	hold := holdChanges(h)
	hold.Lock()
	s.Send(t, "go")
	s.Cmd.Wait()
	if _, err := os.Stat("/proc/" + strconv.Itoa(int(pid))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pid %d still in /proc after it was reaped: %v", pid, err)
	}
	hold.Unlock()
	ev := h.rec.waitFor(t, "the old shell's change", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindChange && ev.Process.PID == pid
	})
	mustName(t, "sh from before", ev.Process, realPath(t, "sh"), "sh", "sh -c "+script, root.Username, parent)
}

// TestChangeNamesTheUIDAfterSetuid: a process that changes its uid
// without an exec (a daemon's worker dropping privileges), which no
// tracepoint reports, is named while it runs with the uid it wrote as,
// not the one it exec'd with.
func TestChangeNamesTheUIDAfterSetuid(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "watched")
	writeFile(t, f, "a\n")
	h := start(t, "profiles:\n  - name: who\n    filters:\n      - path: "+f+"\n")
	requireTable(t, h)
	busyLoad(t)
	nobody, err := user.LookupId("65534")
	if err != nil {
		testroot.Unavailable(t, "no user 65534 here: %v", err)
	}
	testBin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command(testBin, "-test.run=^$")
	c.Env = append(os.Environ(), quickWriterEnv+"="+f, quickUIDEnv+"=65534", quickStayEnv+"=1")
	stdin, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); c.Wait() }()
	ev := h.rec.waitFor(t, "the writer's change", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindChange && ev.Process.PID == int32(c.Process.Pid)
	})
	if ev.Process.UserID != 65534 || ev.Process.UserName != nobody.Username || ev.Process.ExecutablePath != testBin {
		t.Errorf("%+v, want uid 65534 (%s)", ev.Process, nobody.Username)
	}
}
