package engine

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

const floodEnv = "FSMON_TEST_FLOOD"

// runFlood is the flooding process: "THREADS OPENS PATH" opens PATH
// OPENS times from each of THREADS threads and prints how many opens
// succeeded (read the file) and how many failed with EPERM.
func runFlood(spec string) int {
	var threads, opens int
	var path string
	if _, err := fmt.Sscanf(spec, "%d %d %s", &threads, &opens, &path); err != nil {
		fmt.Fprintln(os.Stderr, "flood spec:", err)
		return 2
	}
	var ok, denied, other atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < threads; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // one kernel thread per opener
			var b [16]byte
			for j := 0; j < opens; j++ {
				fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
				switch {
				case err == nil:
					if n, _ := unix.Read(fd, b[:]); n > 0 {
						ok.Add(1)
					}
					unix.Close(fd)
				case err == unix.EPERM:
					denied.Add(1)
				default:
					other.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("read=%d denied=%d other=%d\n", ok.Load(), denied.Load(), other.Load())
	return 0
}

// flood runs the flooding process and returns what it counted.
func flood(t *testing.T, threads, opens int, path string) (read, denied int) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := exec.Command(self)
	c.Env = append(os.Environ(), fmt.Sprintf("%s=%d %d %s", floodEnv, threads, opens, path))
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("flood: %v: %s", err, out)
	}
	var other int
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "read=%d denied=%d other=%d", &read, &denied, &other); err != nil || other != 0 {
		t.Fatalf("flood printed %q (%v)", out, err)
	}
	return read, denied
}

// TestFloodGetsThePolicysAnswer: hundreds of threads of one process
// opening a protected file in a loop all get the policy's answer, EPERM,
// with the daemon's own deadline (250 ms): under such a flood every
// answer wakes every waiting opener, and decisions wait for CPU, not
// because the daemon is stuck; none may be answered by the default
// (which lets the open through).
func TestFloodGetsThePolicysAnswer(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s")
	h := start(t, blockFile("protect", secret, "/usr/bin/head"), func(o *Options) {
		o.DecisionTimeout = 250 * time.Millisecond
	})
	const procs, threads, opens = 3, 300, 100
	var wg sync.WaitGroup
	var read, denied atomic.Int64
	for p := 0; p < procs; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, d := flood(t, threads, opens, secret)
			read.Add(int64(r))
			denied.Add(int64(d))
		}()
	}
	wg.Wait()
	st := h.Snapshot()
	if read.Load() != 0 || denied.Load() != procs*threads*opens || defaults(st) != 0 {
		t.Fatalf("%d opens by %d processes of %d threads: %d read the file, %d denied; %d decisions answered by the default",
			procs*threads*opens, procs, threads, read.Load(), denied.Load(), defaults(st))
	}
	t.Logf("%d opens denied, %s", denied.Load(), strconv.Itoa(int(st.PermissionEvents))+" permission events")
}

// TestDeadlineIsTheDecisionsNotTheBatchs: decisions that each take well
// under the deadline (60 ms of 250, the stand-in for slow /proc reads)
// but queue up behind each other in one batch (ten openers at once) are
// all answered by the policy, none by the default: the watchdog times
// the decision the loop is in, not how long ago the batch was read.
func TestDeadlineIsTheDecisionsNotTheBatchs(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s")
	h := start(t, blockFile("protect", secret, "/usr/bin/head"), func(o *Options) {
		o.DecisionTimeout = 250 * time.Millisecond
	})
	slow := func() { time.Sleep(60 * time.Millisecond) }
	h.slowDecision.Store(&slow)
	defer h.slowDecision.Store(nil)
	const threads = 10
	read, denied := flood(t, threads, 1, secret)
	if st := h.Snapshot(); read != 0 || denied != threads || defaults(st) != 0 {
		t.Fatalf("%d openers at once, 60 ms a decision: %d read the file, %d denied, %d answered by the default",
			threads, read, denied, defaults(st))
	}
}

// TestPermissionThreadsAreRealtime: the permission loop runs at
// SCHED_FIFO 10 and the watchdog at 11, so that a flood of openers at
// normal priority cannot keep them from the CPU.
func TestPermissionThreadsAreRealtime(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s")
	start(t, blockFile("protect", secret, "/usr/bin/head"))
	want := map[int]bool{rtPriority: false, rtPriority + 1: false}
	eventually(t, "threads at SCHED_FIFO 10 and 11", func() error {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		for _, task := range tasks {
			b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
			if err != nil {
				continue
			}
			// After the ")" that ends comm: field 3 is the state, so
			// rt_priority (40) and policy (41) are at 37 and 38.
			f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
			if len(f) < 39 || f[38] != "1" { // SCHED_FIFO
				continue
			}
			if p, _ := strconv.Atoi(f[37]); p == rtPriority || p == rtPriority+1 {
				want[p] = true
			}
		}
		if !want[rtPriority] || !want[rtPriority+1] {
			return fmt.Errorf("found %v", want)
		}
		return nil
	})
}

// shellFlood runs procs shell processes at once, each opening path opens
// times with the shell's own redirection (one permission event per open,
// from that process, no fork per open), and returns how many opens read
// the file's first line ("s") and how many failed.
func shellFlood(t *testing.T, procs, opens int, path string) (read, failed int) {
	t.Helper()
	script := fmt.Sprintf(`r=0; f=0; i=0
while [ $i -lt %d ]; do
  x=
  if read x < '%s' 2>/dev/null && [ "$x" = s ]; then r=$((r+1)); else f=$((f+1)); fi
  i=$((i+1))
done
echo "read=$r failed=$f"`, opens, path)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for p := 0; p < procs; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := exec.Command("/bin/sh", "-c", script).Output()
			var r, f int
			if _, serr := fmt.Sscanf(strings.TrimSpace(string(out)), "read=%d failed=%d", &r, &f); err != nil || serr != nil {
				t.Errorf("shell flood: %v %v: %s", err, serr, out)
				return
			}
			mu.Lock()
			read += r
			failed += f
			mu.Unlock()
		}()
	}
	wg.Wait()
	return read, failed
}

// TestFloodOfProcessesGetsThePolicysAnswer: 200 processes opening a
// protected file in a loop at once, at the default deadline: every open
// gets the policy's answer, EPERM; none is answered by the default.
func TestFloodOfProcessesGetsThePolicysAnswer(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s\n")
	h := start(t, blockFile("protect", secret, "/usr/bin/head"), func(o *Options) {
		o.DecisionTimeout = 250 * time.Millisecond
	})
	const procs, opens = 200, 50
	read, failed := shellFlood(t, procs, opens, secret)
	st := h.Snapshot()
	if read != 0 || failed != procs*opens || defaults(st) != 0 {
		t.Fatalf("%d opens by %d processes: %d read the file, %d failed; %d answered by the default",
			procs*opens, procs, read, failed, defaults(st))
	}
	// The shell's opens were judged, each an event of its own.
	if st.PermissionEvents < procs*opens {
		t.Fatalf("%d permission events for %d opens", st.PermissionEvents, procs*opens)
	}
}

// TestFloodFailClosedDeniesNoAllowedOpener: with --fail-closed, a flood
// of 300 threads outside the allow list and 50 allowed processes opening
// the same file at once: the flood reads nothing, and no allowed open is
// denied (a default answer would deny them).
func TestFloodFailClosedDeniesNoAllowedOpener(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s\n")
	sh, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, blockFile("protect", secret, sh), func(o *Options) {
		o.DecisionTimeout = 250 * time.Millisecond
		o.Default = FailClosed
	})
	const threads, floodOpens, procs, opens = 300, 50, 50, 100
	var wg sync.WaitGroup
	var fr, fd int
	wg.Add(1)
	go func() {
		defer wg.Done()
		fr, fd = flood(t, threads, floodOpens, secret)
	}()
	read, failed := shellFlood(t, procs, opens, secret)
	wg.Wait()
	st := h.Snapshot()
	if fr != 0 || fd != threads*floodOpens || read != procs*opens || failed != 0 || defaults(st) != 0 {
		t.Fatalf("flood: %d read, %d denied of %d; allowed openers: %d read, %d failed of %d; %d answered by the default",
			fr, fd, threads*floodOpens, read, failed, procs*opens, defaults(st))
	}
}
