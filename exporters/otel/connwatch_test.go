package otel

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// connWatch is a listener that accepts every connection, notes who made
// it and closes it: a stand-in for a collector, to see whether anything
// connects.
type connWatch struct {
	l       net.Listener
	mu      sync.Mutex
	remotes []string // in the order accepted
	markers map[string]bool
	changed chan struct{} // closed and replaced at each accept
}

// listenWatch starts a connWatch on addr, or returns the listen error.
func listenWatch(t testing.TB, addr string) (*connWatch, error) {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	w := &connWatch{l: l, markers: map[string]bool{}, changed: make(chan struct{})}
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			w.mu.Lock()
			w.remotes = append(w.remotes, c.RemoteAddr().String())
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
			c.Close()
		}
	}()
	return w, nil
}

func (w *connWatch) addr() string { return w.l.Addr().String() }

// others returns the connections accepted so far that were not the
// test's own markers, after a marker of its own: the test connects, and
// waits until that connection is accepted. The kernel's accept queue is
// FIFO, so every connection established before the marker has been
// accepted and noted by then: no settle time.
func (w *connWatch) others(t testing.TB) []string {
	t.Helper()
	c, err := net.Dial("tcp", w.addr())
	if err != nil {
		t.Fatalf("marker connection to %s: %v", w.addr(), err)
	}
	defer c.Close()
	local := c.LocalAddr().String()
	w.mu.Lock()
	w.markers[local] = true
	w.mu.Unlock()
	deadline := time.After(30 * time.Second)
	for {
		w.mu.Lock()
		var seen bool
		var others []string
		for _, r := range w.remotes {
			if r == local {
				seen = true
			} else if !w.markers[r] {
				others = append(others, r)
			}
		}
		changed := w.changed
		w.mu.Unlock()
		if seen {
			return others
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s did not accept the test's own connection within 30s", w.addr())
		}
	}
}

// inNetnsEnv marks the copy of the test binary that runs in a network
// namespace of its own (runInNetns).
const inNetnsEnv = "FSMON_OTEL_TEST_NETNS"

// runInNetns runs test (this very test function, by name) again in a
// child process in a new network namespace, where nothing else listens on
// or connects to any port, and fails t if it fails there. It reports
// false when the namespace cannot be made (not root).
func runInNetns(t *testing.T, test string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), inNetnsEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	out, err := cmd.CombinedOutput()
	var pe *os.PathError
	if errors.As(err, &pe) { // the clone failed: not allowed here
		t.Logf("no network namespace: %v", err)
		return false
	}
	t.Logf("in a network namespace of its own:\n%s", out)
	if err != nil {
		t.Fatalf("%s in its own network namespace: %v", test, err)
	}
	if !strings.Contains(string(out), "--- PASS: "+test+" ") {
		t.Fatalf("%s did not run and pass in its own network namespace", test)
	}
	return true
}

// loopbackUp brings lo up in the network namespace of a runInNetns child
// (a new namespace has it down): 127.0.0.1 and ::1 come with it.
func loopbackUp(t testing.TB) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		t.Fatalf("lo flags: %v", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		t.Fatalf("lo up: %v", err)
	}
}
