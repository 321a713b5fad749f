package engine

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/testutil/stepper"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// holds reports whether pid has a descriptor of p open.
func holds(pid int32, p string) bool {
	dir := "/proc/" + strconv.Itoa(int(pid)) + "/fd/"
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if l, err := os.Readlink(dir + e.Name()); err == nil && l == p {
			return true
		}
	}
	return false
}

// waitScans waits until the scanner has finished more than n scans.
func waitScans(t *testing.T, h *harness, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for h.earlyScans() <= n {
		if time.Now().After(deadline) {
			t.Fatalf("no scan for early descriptors after %d within 10s", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func unjudgedOf(h *harness, profile, filter string) int {
	for _, u := range h.Snapshot().Unjudged {
		if u.Profile == profile && u.Filter == filter {
			return u.Count
		}
	}
	return -1
}

// A descriptor opened before the engine started cannot be denied; the
// scan after the walk finds it in a process the filter does not allow and
// reports it once, names no allowed holder, and counts it until it is
// closed.
func TestDescriptorOpenedBeforeStartIsReported(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s3cret\n")
	// The outsider: a shell holding the file on fd 3.
	thief := stepper.Shell(t, "exec 3<"+secret+"; echo held; read x; exec 3<&-; echo closed; read x")
	thief.Expect(t, "held")
	// An allowed holder: tail -f keeps its descriptor.
	tail := stepper.Start(t, "/usr/bin/tail", "-f", secret)
	eventually(t, "tail holds the file", func() error {
		if !holds(tail.PID(), secret) {
			return errStillAllowed
		}
		return nil
	})

	h := start(t, blockFile("protect", secret, "/usr/bin/tail"))
	ev := h.rec.waitFor(t, "the early descriptor", func(ev *fsmon.Event) bool {
		return ev.Reason == fsmon.ReasonOpenedBefore && ev.Process.PID == thief.PID()
	})
	if ev.Kind != fsmon.KindViolation || ev.Op != fsmon.OpOpen || ev.Path != secret || ev.Filter != "secret" || ev.Profile != "t" || ev.Mode != fsmon.ModeProtect {
		t.Errorf("event: %+v", ev)
	}
	waitScans(t, h, 0)
	if n := unjudgedOf(h, "t", "secret"); n != 1 {
		t.Fatalf("fsmon_unjudged_descriptors = %d, want 1 (%+v)", n, h.Snapshot().Unjudged)
	}
	// Every report of the scan was queued before it counted; a denied
	// open queued after them proves they have reached the sink.
	mustDeny(t, cmd(t, "cat", secret))
	h.rec.noneBefore(t, "about the allowed holder", func(ev *fsmon.Event) bool {
		return ev.Process.PID == tail.PID()
	}, "the denied cat", kind(fsmon.KindDenied, secret))

	// Found again by a later scan: not reported again.
	n := h.earlyScans()
	if _, err := h.Apply(compile(t, blockFile("protect", secret, "/usr/bin/tail"))); err != nil {
		t.Fatal(err)
	}
	waitScans(t, h, n)
	if c := unjudgedOf(h, "t", "secret"); c != 1 {
		t.Fatalf("after a reload with the descriptor still open: %d, want 1", c)
	}
	mustDeny(t, cmd(t, "cat", secret))
	reports := 0
	for _, ev := range h.rec.all() {
		if ev.Reason == fsmon.ReasonOpenedBefore {
			reports++
		}
	}
	if reports != 1 {
		t.Errorf("%d reports of the early descriptor, want 1: %s", reports, dump(h.rec.all()))
	}

	// Closed: the next scan (a reload) counts 0.
	thief.Send(t, "")
	thief.Expect(t, "closed")
	n = h.earlyScans()
	if _, err := h.Apply(compile(t, blockFile("protect", secret, "/usr/bin/tail"))); err != nil {
		t.Fatal(err)
	}
	waitScans(t, h, n)
	if c := unjudgedOf(h, "t", "secret"); c != 0 {
		t.Fatalf("after the descriptor was closed: %d, want 0", c)
	}
}

// A file mapped before start reads through the mapping after its
// descriptor is closed: found in /proc/PID/maps. An O_PATH descriptor
// cannot read (reopening it is an open, judged): not counted.
func TestMappingOpenedBeforeStartIsReported(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s3cret\n")
	py := stepper.Start(t, "python3", "-c", `
import mmap, os, sys
p = sys.argv[1]
fd = os.open(p, os.O_RDONLY)
m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
os.close(fd)
pfd = os.open(p, os.O_PATH)
print("held", flush=True)
sys.stdin.readline()
`, secret)
	py.Expect(t, "held")

	h := start(t, blockFile("protect", secret, "/usr/bin/tail"))
	ev := h.rec.waitFor(t, "the early mapping", func(ev *fsmon.Event) bool {
		return ev.Reason == fsmon.ReasonOpenedBefore && ev.Process.PID == py.PID()
	})
	if ev.Kind != fsmon.KindViolation || ev.Path != secret {
		t.Errorf("event: %+v", ev)
	}
	waitScans(t, h, 0)
	// Python's mmap keeps a dup of the descriptor: that and the mapping,
	// not the O_PATH descriptor.
	if n := unjudgedOf(h, "t", "secret"); n != 2 {
		t.Fatalf("fsmon_unjudged_descriptors = %d, want 2: the mapping and mmap's own descriptor, not the O_PATH one", n)
	}
}

// A container covered after start (here by a reload) is walked, and the
// scan after its walk finds what its processes held before: the event
// names the container and the path inside it.
func TestContainerDescriptorOpenedBeforeItsWalkIsReported(t *testing.T) {
	testroot.Require(t)
	testroot.RequireCommand(t, "nsenter")
	root := busyboxRoot(t)
	writeFile(t, filepath.Join(root, "etc", "shadow"), "container secret\n")
	c := startContainer(t, root, "web-early", cgroupV2Docker)
	holder := stepper.Start(t, "nsenter", "-t", strconv.Itoa(int(c.pid)), "-m", "-p", "-r", "-w", "--",
		"/bin/sh", "-c", "exec 3</etc/shadow; echo held; read x")
	holder.Expect(t, "held")

	// First no profile selects it: passed over.
	h := startScanning(t, scanForTests, strings.ReplaceAll(containerConfig, "{run}-web-*", "{run}-none-*"))
	waitPassedOver(t, h, c)
	// The reload covers it. Its walk waits for placement, held here
	// until the reload's own scan is done: the report can only come
	// from the scan after the container's walk.
	n := h.earlyScans()
	if _, err := h.Apply(compile(t, strings.ReplaceAll(containerConfig, "{run}", testRun))); err != nil {
		t.Fatal(err)
	}
	pl := h.marks.Place()
	waitScans(t, h, n)
	pl.Done()
	ev := h.rec.waitFor(t, "the container's early descriptor", func(ev *fsmon.Event) bool {
		return ev.Reason == fsmon.ReasonOpenedBefore && ev.Container.ID == c.id
	})
	if ev.Kind != fsmon.KindViolation || ev.Path != "/etc/shadow" || ev.Filter != "shadow" || ev.Profile != "web" {
		t.Errorf("event: %+v", ev)
	}
}

func TestMapFilesName(t *testing.T) {
	for in, want := range map[string]string{
		"00400000-00452000":         "400000-452000",
		"7f3a2c000000-7f3a2c021000": "7f3a2c000000-7f3a2c021000",
	} {
		if got := mapFilesName([]byte(in)); got != want {
			t.Errorf("mapFilesName(%q) = %q, want %q", in, got, want)
		}
	}
}
