package fanotify

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// childEnv, when set, makes the test binary a child that holds one file
// and does to it what its stdin says (childMain): the process whose
// reads the tests' groups judge. A group's own process is judged too,
// but then the answering thread and the judged call share a runtime.
const childEnv = "FANOTIFY_TEST_CHILD"

// TestMain turns the collector off for the reason fsmon/engine's does:
// a vfork'd child whose exec waits for an answer would stall a
// stop-the-world, and with it the responder.
func TestMain(m *testing.M) {
	if p := os.Getenv(childEnv); p != "" {
		os.Exit(childMain(p))
	}
	debug.SetGCPercent(-1)
	os.Exit(m.Run())
}

// childMain answers each command line with "ok" or the errno's name:
// open (O_RDWR, kept), pread OFF LEN, mmap, truncate (by path, to 0).
func childMain(path string) int {
	fd := -1
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var err error
		f := strings.Fields(in.Text())
		switch f[0] {
		case "open":
			fd, err = unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		case "pread":
			var off, n int
			fmt.Sscan(f[1]+" "+f[2], &off, &n)
			_, err = unix.Pread(fd, make([]byte, n), int64(off))
		case "mmap":
			var b []byte
			b, err = unix.Mmap(fd, 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
			if err == nil {
				unix.Munmap(b)
			}
		case "truncate":
			err = unix.Truncate(path, 0)
		}
		if err != nil {
			var e unix.Errno
			errors.As(err, &e)
			fmt.Println(unix.ErrnoName(e))
		} else {
			fmt.Println("ok")
		}
	}
	return 0
}

type child struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startChild(t *testing.T, path string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, in: in, out: bufio.NewScanner(out)}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	return c
}

// do sends one command and returns the child's answer, which comes only
// after every event the call raised has been answered.
func (c *child) do(cmd string) string {
	c.t.Helper()
	fmt.Fprintln(c.in, cmd)
	if !c.out.Scan() {
		c.t.Fatalf("child gone after %q: %v", cmd, c.out.Err())
	}
	return c.out.Text()
}

// responder answers every permission event of g with verdict(ev) and
// sends a copy of each on the returned channel.
func responder(t *testing.T, g *Group, verdict func(ev *Event) Verdict) <-chan Event {
	t.Helper()
	evs := make(chan Event, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := g.File().Read(buf)
			if err != nil {
				return
			}
			Parse(buf[:n], func(ev *Event) {
				if ev.Mask.Any(PermEvents) {
					if err := g.Respond(ev.FD, verdict(ev)); err != nil {
						// Unanswered, the child would wait until
						// the group closes: let it go on, failed.
						t.Errorf("respond: %v", err)
						g.Respond(ev.FD, Allow)
					}
				}
				CloseFD(ev.FD)
				evs <- *ev
			})
		}
	}()
	t.Cleanup(func() { g.Close(); <-done })
	return evs
}

func permGroup(t *testing.T) *Group {
	t.Helper()
	testroot.Require(t)
	g, err := NewPermission(QueueUnlimited, ReadsPolled)
	if err != nil {
		t.Fatal(err)
	}
	if g.Class() != ClassPreContent {
		testroot.Unavailable(t, "no pre-content fanotify class on this kernel (got %s)", g.Class())
	}
	return g
}

func opath(t *testing.T, p string) int {
	t.Helper()
	fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// ext4File makes a file of n bytes in a directory of the root file
// system (ext4 here, where pre-content events exist).
func ext4File(t *testing.T, n int) (dir, file string) {
	t.Helper()
	dir = t.TempDir()
	file = filepath.Join(dir, "secret")
	if err := os.WriteFile(file, make([]byte, n), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, file
}

// denyPid denies the permission events of pid and allows the rest.
func denyPid(c *child) func(ev *Event) Verdict {
	return func(ev *Event) Verdict {
		if int(ev.PID) == c.cmd.Process.Pid {
			return Deny
		}
		return Allow
	}
}

// one returns the single event on evs, failing when there is none or
// more (every event a call raised was read before the call returned).
func one(t *testing.T, evs <-chan Event) Event {
	t.Helper()
	var got []Event
	for {
		select {
		case ev := <-evs:
			got = append(got, ev)
			continue
		default:
		}
		break
	}
	if len(got) != 1 {
		t.Fatalf("want one event, got %d: %+v", len(got), got)
	}
	return got[0]
}

// A descriptor opened after the file system was armed and before the
// file's own PreAccess mark is judged at each read: the open-time
// decision of the kernel saw the arming mark.
func TestArmedDescriptorOpenedBeforeMarkIsJudged(t *testing.T) {
	perm := permGroup(t)
	dir, file := ext4File(t, 8192)
	arm, err := NewPermission(QueueUnlimited, ReadsPolled)
	if err != nil {
		t.Fatal(err)
	}
	defer arm.Close()
	armEvs := responder(t, arm, func(*Event) Verdict { return Allow })
	gd, err := arm.Arm(opath(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	if gd != GuardPreContent {
		testroot.Unavailable(t, "%s: no pre-content events on this file system (guard %s)", dir, gd)
	}
	c := startChild(t, file)
	evs := responder(t, perm, denyPid(c))
	if r := c.do("open"); r != "ok" {
		t.Fatalf("open: %s", r)
	}
	if gd, err := perm.AddGuarded(opath(t, file), 0); err != nil || gd != GuardPreContent {
		t.Fatalf("inode mark: %s %v", gd, err)
	}
	if r := c.do("pread 0 4"); r != "EPERM" {
		t.Fatalf("pread through a descriptor opened after arming: %s, want EPERM", r)
	}
	ev := one(t, evs)
	if ev.Mask != PreAccess || int(ev.PID) != c.cmd.Process.Pid || !ev.HasRange || ev.Range != (Range{0, 4096}) {
		t.Fatalf("event %+v", ev)
	}
	if r := c.do("mmap"); r != "EPERM" {
		t.Fatalf("mmap: %s, want EPERM", r)
	}
	one(t, evs)
	select {
	case ev := <-armEvs:
		t.Fatalf("the arming group got an event: %+v", ev)
	default:
	}
}

// truncate(2) by path of a PreAccess-marked file is asked, with the
// range {0, 0}, and denied; and a read raises exactly one event that
// carries its page-aligned range.
func TestPreAccessTruncateAndRange(t *testing.T) {
	perm := permGroup(t)
	_, file := ext4File(t, 200000)
	c := startChild(t, file)
	var deny atomic.Bool
	deny.Store(true)
	evs := responder(t, perm, func(ev *Event) Verdict {
		if deny.Load() && int(ev.PID) == c.cmd.Process.Pid {
			return Deny
		}
		return Allow
	})
	if gd, err := perm.AddGuarded(opath(t, file), 0); err != nil || gd != GuardPreContent {
		t.Fatalf("inode mark: %s %v", gd, err)
	}
	if r := c.do("truncate"); r != "EPERM" {
		t.Fatalf("truncate by path: %s, want EPERM", r)
	}
	if ev := one(t, evs); ev.Mask != PreAccess || !ev.HasRange || ev.Range != (Range{0, 0}) {
		t.Fatalf("truncate event %+v", ev)
	}
	if st, err := os.Stat(file); err != nil || st.Size() != 200000 {
		t.Fatalf("file after the denied truncate: %v %v", st, err)
	}
	deny.Store(false)
	if r := c.do("open"); r != "ok" {
		t.Fatalf("open: %s", r)
	}
	if r := c.do("pread 5000 10"); r != "ok" {
		t.Fatalf("allowed pread: %s", r)
	}
	if ev := one(t, evs); ev.Range != (Range{4096, 4096}) || int(ev.PID) != c.cmd.Process.Pid {
		t.Fatalf("pread(10 at 5000) event %+v", ev)
	}
}

// A deny with an errno reaches the caller as that errno in a
// pre-content group; one the kernel refuses (EACCES) is answered again
// as a plain deny instead of leaving the caller waiting.
func TestDenyErrnoAndFallback(t *testing.T) {
	perm := permGroup(t)
	_, file := ext4File(t, 4096)
	c := startChild(t, file)
	var v atomic.Uint32
	evs := responder(t, perm, func(ev *Event) Verdict {
		if int(ev.PID) == c.cmd.Process.Pid {
			return Verdict(v.Load())
		}
		return Allow
	})
	if _, err := perm.AddGuarded(opath(t, file), 0); err != nil {
		t.Fatal(err)
	}
	if r := c.do("open"); r != "ok" {
		t.Fatalf("open: %s", r)
	}
	for _, tc := range []struct {
		v    Verdict
		want string
	}{{DenyErrno(unix.EIO), "EIO"}, {DenyErrno(unix.EACCES), "EPERM"}, {Deny, "EPERM"}} {
		v.Store(uint32(tc.v))
		if r := c.do("pread 0 1"); r != tc.want {
			t.Fatalf("%s: pread %s, want %s", tc.v, r, tc.want)
		}
		one(t, evs)
	}
}

// A content-class group refuses any errno: the fallback turns its deny
// into a plain one.
func TestDenyErrnoContentClass(t *testing.T) {
	testroot.Require(t)
	g, err := New(ClassContent, ReportFD, QueueUnlimited, ReadsPolled)
	if err != nil {
		t.Fatal(err)
	}
	_, file := ext4File(t, 4096)
	c := startChild(t, file)
	evs := responder(t, g, func(ev *Event) Verdict {
		if int(ev.PID) == c.cmd.Process.Pid {
			return DenyErrno(unix.EIO)
		}
		return Allow
	})
	if gd, err := g.AddGuarded(opath(t, file), OpenPerm); err != nil || gd != GuardReadOnly {
		t.Fatalf("content-class mark: %s %v", gd, err)
	}
	if r := c.do("open"); r != "EPERM" {
		t.Fatalf("open: %s, want EPERM", r)
	}
	if ev := one(t, evs); ev.Mask != OpenPerm {
		t.Fatalf("event %+v", ev)
	}
}

// On tmpfs there are no pre-content events: the marks fall back to
// FAN_ACCESS_PERM, reported as GuardReadOnly, not as an error, and
// arming still makes a descriptor opened before the inode mark judged
// at read.
func TestTmpfsFallsBackToAccessPerm(t *testing.T) {
	perm := permGroup(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		testroot.Unavailable(t, "mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	arm, err := NewPermission(QueueUnlimited, ReadsPolled)
	if err != nil {
		t.Fatal(err)
	}
	responder(t, arm, func(*Event) Verdict { return Allow })
	if gd, err := arm.Arm(opath(t, dir)); err != nil || gd != GuardReadOnly {
		t.Fatalf("arming tmpfs: %s %v, want read-only", gd, err)
	}
	c := startChild(t, file)
	evs := responder(t, perm, denyPid(c))
	if r := c.do("open"); r != "ok" {
		t.Fatalf("open: %s", r)
	}
	if gd, err := perm.AddGuarded(opath(t, file), 0); err != nil || gd != GuardReadOnly {
		t.Fatalf("tmpfs inode mark: %s %v, want read-only", gd, err)
	}
	if r := c.do("pread 0 4"); r != "EPERM" {
		t.Fatalf("pread: %s, want EPERM", r)
	}
	if ev := one(t, evs); ev.Mask != AccessPerm || ev.HasRange {
		t.Fatalf("event %+v", ev)
	}
	// What the fallback leaves open: mmap is not asked about.
	if r := c.do("mmap"); r != "ok" {
		t.Fatalf("mmap on tmpfs: %s (if this is denied now, the README's tmpfs limits are out of date)", r)
	}
}
