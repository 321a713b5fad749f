package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// recorder is a sink that keeps every event for assertions.
type recorder struct {
	mu  sync.Mutex
	evs []fsmon.Event
	new chan struct{}
}

func newRecorder() *recorder { return &recorder{new: make(chan struct{}, 1)} }

func (r *recorder) Handle(ev *fsmon.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, *ev)
	r.mu.Unlock()
	select {
	case r.new <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []fsmon.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]fsmon.Event(nil), r.evs...)
}

// waitFor returns the first event that matches, waiting up to timeout.
func (r *recorder) waitFor(t *testing.T, what string, match func(*fsmon.Event) bool) fsmon.Event {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		for _, ev := range r.all() {
			if match(&ev) {
				return ev
			}
		}
		select {
		case <-r.new:
		case <-deadline:
			t.Fatalf("no event %s within 5s; events: %s", what, dump(r.all()))
		}
	}
}

// noneBefore asserts that no event (but the marker) matches once an event
// that matches marker has arrived. Every report goes through one FIFO queue to
// the sink, so a marker that the engine can only report after the point
// where the unwanted event would have been queued (a later open of the
// same loop, a change caused afterwards) proves the engine got that far:
// the check cannot pass just because the test did not wait long enough.
func (r *recorder) noneBefore(t *testing.T, what string, match func(*fsmon.Event) bool, markerWhat string, marker func(*fsmon.Event) bool) {
	t.Helper()
	r.waitFor(t, markerWhat, marker)
	for _, ev := range r.all() {
		if match(&ev) && !marker(&ev) {
			t.Fatalf("unexpected event %s (by the time of %s): %+v", what, markerWhat, ev)
		}
	}
}

func dump(evs []fsmon.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "\n  %s %s %s pid=%d exe=%s", ev.Kind, ev.Op, ev.Path, ev.Process.PID, ev.Process.ExecutablePath)
	}
	return b.String()
}

func compile(t testing.TB, yaml string) *policy.Policy {
	t.Helper()
	cfg, err := policy.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	p, err := policy.Compile(cfg)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return p
}

type harness struct {
	*Engine
	rec *recorder
	// stop ends the engine before the test does (a restart); the
	// test's cleanup then has nothing left to stop.
	stop func()
}

// start runs an engine with the configuration until the test ends.
func start(t testing.TB, yaml string, opts ...func(*Options)) *harness {
	t.Helper()
	testroot.Require(t)
	rec := newRecorder()
	o := Options{Sink: rec, DecisionTimeout: 2 * time.Second}
	if os.Getenv("FSMON_TEST_LOG") != "" {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, f := range opts {
		f(&o)
	}
	e, err := New(o)
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("engine did not stop within 10s")
			}
		})
	}
	t.Cleanup(stop)
	res, err := e.Apply(compile(t, yaml))
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if res.Errors > 0 {
		t.Fatalf("apply: %d objects not marked, first: %v", res.Errors, res.FirstError)
	}
	if !e.Ready() {
		t.Fatal("not ready after Apply")
	}
	// The facts worker's first comparison of the watched files opens
	// them (their hashes): done before the test opens any, so that
	// tests that count permission events count only theirs.
	for deadline := time.Now().Add(10 * time.Second); e.facts.syncs.Load() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first comparison with the baseline not done within 10s")
		}
	}
	return &harness{Engine: e, rec: rec, stop: stop}
}

// sh runs a shell command line in a child process and returns its
// combined output and error.
// res is what a child process printed and how it ended.
type res struct {
	out string
	err error
}

func sh(t *testing.T, script string) res {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "sh", "-c", script).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%q hung: the open was never answered", script)
	}
	return res{string(out), err}
}

// cmd runs a program in a child process.
func cmd(t *testing.T, name string, args ...string) res {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	out, err := c.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v hung: the open was never answered", name, args)
	}
	return res{string(out), err}
}

// mustDeny asserts that the child failed with "Permission denied".
func mustDeny(t *testing.T, r res) {
	t.Helper()
	out, err := r.out, r.err
	if err == nil {
		t.Fatalf("expected EPERM, the command succeeded: %s", out)
	}
	if l := strings.ToLower(out + err.Error()); !strings.Contains(l, "permission denied") && !strings.Contains(l, "not permitted") {
		t.Fatalf("expected a permission error, got %v: %s", err, out)
	}
}

func mustAllow(t *testing.T, r res) {
	t.Helper()
	out, err := r.out, r.err
	if err != nil {
		t.Fatalf("expected success, got %v: %s", err, out)
	}
}

// eventually retries f until it returns nil, for what the engine does
// asynchronously (marking a directory created after start).
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after 5s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func kind(k fsmon.Kind, path string) func(*fsmon.Event) bool {
	return func(ev *fsmon.Event) bool { return ev.Kind == k && ev.Path == path }
}

func change(op fsmon.Op, path string) func(*fsmon.Event) bool {
	return func(ev *fsmon.Event) bool { return ev.Kind == fsmon.KindChange && ev.Op == op && ev.Path == path }
}

var errStillAllowed = errors.New("still allowed")

// denied reports nil when cat of p fails with EPERM.
func denied(p string) error {
	out, err := exec.Command("cat", p).CombinedOutput()
	if err == nil {
		return errStillAllowed
	}
	if !strings.Contains(string(out), "not permitted") {
		return fmt.Errorf("cat: %v: %s", err, out)
	}
	return nil
}

var _ = syscall.EPERM
