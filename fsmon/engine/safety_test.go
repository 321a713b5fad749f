package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// startSlow is start with every decision held until the test calls
// release (or ends): each misses the deadline.
func startSlow(t *testing.T, yaml string, def DefaultAnswer) (h *harness, release func()) {
	t.Helper()
	h = start(t, yaml, func(o *Options) {
		o.DecisionTimeout = 100 * time.Millisecond
		o.Default = def
	})
	held := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(held) }) }
	// Registered after start's cleanup, so it runs first: stopping the
	// engine waits for the loop, which waits for this.
	t.Cleanup(release)
	slow := func() { <-held }
	h.slowDecision.Store(&slow)
	return h, release
}

// holdFirstDecision makes the next decision h begins hang until the
// returned release is called (or the test ends); later decisions run.
// The loop is then stuck, and a stand-in answers what follows.
func holdFirstDecision(t *testing.T, h *harness) (release func()) {
	t.Helper()
	held := make(chan struct{})
	var first, released sync.Once
	release = func() { released.Do(func() { close(held) }) }
	t.Cleanup(release)
	stuck := func() {
		hold := false
		first.Do(func() { hold = true })
		if hold {
			<-held
		}
	}
	h.slowDecision.Store(&stuck)
	return release
}

// defaults is the number of opens answered by the default, either answer.
func defaults(st fsmon.State) uint64 {
	return st.DecisionTimeouts[fsmon.AnswerAllow] + st.DecisionTimeouts[fsmon.AnswerDeny]
}

// timeoutsAtLeast waits until the engine has counted n timeouts: the
// watchdog counts after it answers, so the opener may be done first.
func timeoutsAtLeast(t *testing.T, h *harness, n uint64) {
	t.Helper()
	eventually(t, "timeout counted", func() error {
		if got := defaults(h.Snapshot()); got < n {
			return fmt.Errorf("%d timeouts, want %d", got, n)
		}
		return nil
	})
}

// TestDeadlineAnswersWithDefault: a decision that misses the deadline is
// answered by the watchdog with the default; the loop's late decision
// is discarded, neither answered nor reported, and the open counts as
// one timeout.
func TestDeadlineAnswersWithDefault(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s")
	// A monitored file elsewhere: its changes make no permission event.
	watched := filepath.Join(t.TempDir(), "watched")
	writeFile(t, watched, "w")
	h, release := startSlow(t, protectFile("protect", secret)+`
      - name: watched
        path: `+watched+`
`, FailOpen)
	// The decision would deny, but it misses the deadline: the
	// watchdog's default answer (allow) is what the kernel got.
	// An open without a read: the default answers the open only; a
	// read would be a content event of its own, judged by the policy.
	mustAllow(t, sh(t, ": < "+secret))
	// The loop is still in that decision.
	gen := h.batch.gen.Load()
	if h.batch.start.Load() == 0 {
		t.Fatal("the permission loop is not in a decision")
	}
	timeoutsAtLeast(t, h, 1)
	release()
	// The loop ends the late decision and leaves its batch: what it
	// reports of it is queued by then.
	eventually(t, "the loop done with the late decision", func() error {
		if h.batch.gen.Load() == gen && h.batch.start.Load() != 0 {
			return errors.New("still in the late batch")
		}
		return nil
	})
	// A change made now is reported after anything queued before: the
	// default answer as one timeout event, and no report of the late
	// decision.
	mustAllow(t, sh(t, "echo x >> "+watched))
	h.rec.noneBefore(t, "a report of the open but its timeout", func(ev *fsmon.Event) bool { return ev.Kind != fsmon.KindChange && ev.Kind != fsmon.KindTimeout },
		"a later change", change(fsmon.OpWrite, watched))
	timeoutReported(t, h, secret, fsmon.AnswerAllow, fsmon.ReasonDeadline)
	// Nothing else made a permission event: one open, one timeout.
	if st := h.Snapshot(); st.DecisionTimeouts[fsmon.AnswerAllow] != 1 || st.DecisionTimeouts[fsmon.AnswerDeny] != 0 || st.LateAnswers != 0 {
		t.Errorf("timeouts counted %v, late %d; want one allow", st.DecisionTimeouts, st.LateAnswers)
	}
}

// timeoutReported asserts that exactly one timeout event was reported,
// of an open of path, with the answer and reason.
func timeoutReported(t *testing.T, h *harness, path string, a fsmon.Answer, why fsmon.Reason) {
	t.Helper()
	h.rec.waitFor(t, "timeout of "+path, func(ev *fsmon.Event) bool { return ev.Kind == fsmon.KindTimeout })
	var got []fsmon.Event
	for _, ev := range h.rec.all() {
		if ev.Kind == fsmon.KindTimeout {
			got = append(got, ev)
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d timeout events, want 1: %s", len(got), dump(got))
	}
	ev := got[0]
	if ev.Path != path || ev.Op != fsmon.OpOpen || ev.Answer != a || ev.Reason != why || ev.Process.PID <= 0 || ev.Process.CommandLine != "" {
		t.Fatalf("timeout event %+v, want an open of %s answered %v for %v", ev, path, a, why)
	}
}

func TestDeadlineFailClosed(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s")
	h, _ := startSlow(t, protectFile("protect", secret), FailClosed)
	// Even the allowed head is denied when its decision is stuck.
	mustDeny(t, cmd(t, "head", secret))
	timeoutsAtLeast(t, h, 1)
	timeoutReported(t, h, secret, fsmon.AnswerDeny, fsmon.ReasonDeadline)
	if st := h.Snapshot(); st.DecisionTimeouts[fsmon.AnswerDeny] != 1 || st.DecisionTimeouts[fsmon.AnswerAllow] != 0 {
		t.Errorf("timeouts counted %v, want one deny", st.DecisionTimeouts)
	}
}

func TestSnapshot(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s")
	keys := filepath.Join(dir, "keys")
	os.MkdirAll(filepath.Join(keys, "a"), 0o755)
	writeFile(t, filepath.Join(keys, "a", "x.key"), "k")
	writeFile(t, filepath.Join(keys, "y.key"), "k")
	h := start(t, protectFile("protect", secret)+`
      - name: keys
        path: `+keys+`
        regex: '.*\.key'
        recursive: true
`)
	s := h.Snapshot()
	if !s.Ready || len(s.Groups) != 1 || s.Groups[0].Name != "host" {
		t.Fatalf("groups %+v ready %v", s.Groups, s.Ready)
	}
	// Directories: dir (parent of secret; in both groups), keys and
	// keys/a (notification group only: the keys filter monitors).
	if got := s.Marks[fsmon.MarkFile]; got != 4 {
		t.Errorf("file marks = %d, want 4 (3 files in the notification group, the blocked one in the permission group)", got)
	}
	if got := s.Marks[fsmon.MarkDir]; got != 4 {
		t.Errorf("dir marks = %d, want 4", got)
	}
	if s.Rules != 2 {
		t.Errorf("rules = %d, want 2 (the allow list of the block filter)", s.Rules)
	}
	if s.InotifyWatches < 3 || s.InotifyLimit <= 0 {
		t.Errorf("watches %d limit %d", s.InotifyWatches, s.InotifyLimit)
	}
	mustDeny(t, cmd(t, "cat", secret))
	h.rec.waitFor(t, "denied", kind(fsmon.KindDenied, secret))
	s = h.Snapshot()
	if s.PermissionEvents < 1 || s.Decisions.Count < 1 {
		t.Errorf("permission events %d decisions %d", s.PermissionEvents, s.Decisions.Count)
	}
}

func TestObjectLimitBoundsTheTables(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 50; i++ {
		writeFile(t, filepath.Join(dir, "f"+strconv.Itoa(i)), "x")
	}
	testroot.Require(t)
	rec := newRecorder()
	e := runEngine(t, Options{Sink: rec, MaxObjects: 10})
	res, err := e.Apply(compile(t, "profiles:\n  - name: t\n    host: true\n    filters:\n      - path: "+dir+"\n"))
	if !errors.Is(err, ErrPartial) || !errors.Is(err, ErrTooMany) {
		t.Fatalf("Apply past the object limit: %v, want ErrPartial and ErrTooMany", err)
	}
	if res.Dirs+res.Files > 10 || !errors.Is(res.FirstError, ErrTooMany) || !res.Incomplete {
		t.Fatalf("dirs %d files %d first error %v incomplete %v", res.Dirs, res.Files, res.FirstError, res.Incomplete)
	}
	// Not all in force: not ready.
	if e.Ready() {
		t.Fatal("ready though the object limit cut the configuration short")
	}
}

func TestPanicInADecisionIsAnsweredAndSurvived(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s")
	h := start(t, protectFile("protect", secret))
	var once sync.Once
	bug := func() {
		fire := false
		once.Do(func() { fire = true })
		if fire {
			panic("a bug in a decision")
		}
	}
	h.slowDecision.Store(&bug)
	// The panicking decision gets the default answer (allow)...
	// An open without a read: the default answers the open only; a
	// read would be a content event of its own, judged by the policy.
	mustAllow(t, sh(t, ": < "+secret))
	// ...and the loop goes on deciding.
	mustDeny(t, cmd(t, "cat", secret))
	// The default answer is reported, before the later deny.
	h.rec.waitFor(t, "the later deny", kind(fsmon.KindDenied, secret))
	timeoutReported(t, h, secret, fsmon.AnswerAllow, fsmon.ReasonPanic)
}

// TestPanicAfterTheVerdictGetsTheVerdict: a decision that fails in
// phase 2 (gathering the report), after its verdict is known, answers
// with that verdict, not the default: a process outside the list is
// still denied, and nothing is counted as a default answer.
func TestPanicAfterTheVerdictGetsTheVerdict(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s")
	h := start(t, protectFile("protect", secret))
	var once sync.Once
	bug := func() {
		fire := false
		once.Do(func() { fire = true })
		if fire {
			panic("a bug gathering a report")
		}
	}
	h.slowReport.Store(&bug)
	mustDeny(t, cmd(t, "cat", secret))
	mustDeny(t, cmd(t, "cat", secret))
	h.rec.waitFor(t, "the second deny", kind(fsmon.KindDenied, secret))
	// Answered by the loop's recovery, not left for the watchdog.
	if st := h.Snapshot(); defaults(st) != 0 || st.LateAnswers != 0 {
		t.Fatalf("%d default answers, %d late; want 0 and 0", defaults(st), st.LateAnswers)
	}
}

// TestStalledReportGetsThePolicysVerdict: a decision whose verdict is
// known but whose report's facts cannot be read (phase 2 stuck: a
// command line whose process holds its mmap_lock) is answered by the
// watchdog with the policy's verdict: a process outside the allow list
// is denied, an allowed one reads the file. Neither is a default answer
// or reported as a timeout; both count as late, and the denied open is
// reported as denied once phase 2 ends.
func TestStalledReportGetsThePolicysVerdict(t *testing.T) {
	for _, def := range []DefaultAnswer{FailOpen, FailClosed} {
		for _, tc := range []struct {
			opener string
			want   fsmon.Kind
		}{{"cat", fsmon.KindDenied}, {"head", fsmon.KindAccess}} {
			name := map[DefaultAnswer]string{FailOpen: "fail-open", FailClosed: "fail-closed"}[def] + "/" + tc.opener
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				secret := filepath.Join(dir, "secret")
				writeFile(t, secret, "s")
				// report_access: the allowed open is reported too, so it
				// has a phase 2 to stall in.
				h := start(t, strings.Replace(blockFile("protect", secret, "/usr/bin/head"), "behavior: block", "behavior: block\n        report_access: true", 1), func(o *Options) {
					o.DecisionTimeout = 100 * time.Millisecond
					o.Default = def
				})
				held := make(chan struct{})
				var once sync.Once
				release := func() { once.Do(func() { close(held) }) }
				t.Cleanup(release)
				stall := func() { <-held }
				h.slowReport.Store(&stall)
				r := cmd(t, tc.opener, secret)
				if tc.want == fsmon.KindDenied {
					mustDeny(t, r)
				} else {
					mustAllow(t, r)
				}
				eventually(t, "the late answer counted", func() error {
					if n := h.Snapshot().LateAnswers; n != 1 {
						return fmt.Errorf("%d late answers", n)
					}
					return nil
				})
				h.slowReport.Store(nil)
				release()
				// Reported once phase 2 ends, as the policy's answer.
				h.rec.waitFor(t, "the stalled open reported", kind(tc.want, secret))
				for _, ev := range h.rec.all() {
					if ev.Kind == fsmon.KindTimeout {
						t.Fatalf("a late policy answer reported as a timeout: %+v", ev)
					}
				}
				if n := defaults(h.Snapshot()); n != 0 {
					t.Fatalf("%d default answers, want 0", n)
				}
			})
		}
	}
}

// TestStuckDecisionDoesNotHoldUpTheQueue: while the loop is stuck in one
// decision, later opens are answered by a stand-in reader with the
// policy's verdict, not when the stuck decision ends and not with the
// default.
func TestStuckDecisionDoesNotHoldUpTheQueue(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s")
	h := start(t, protectFile("protect", secret), func(o *Options) { o.DecisionTimeout = 100 * time.Millisecond })
	release := holdFirstDecision(t, h)
	// The first open's decision hangs; the watchdog answers it.
	// An open without a read: the default answers the open only; a
	// read would be a content event of its own, judged by the policy.
	mustAllow(t, sh(t, ": < "+secret))
	// The loop is still stuck. Without a stand-in reader this open would
	// wait for it; the stand-in decides it with the policy: denied, and
	// reported as such, not as a timeout.
	mustDeny(t, cmd(t, "cat", secret))
	if st := h.Snapshot(); st.StandinAnswers < 1 || defaults(st) != 1 {
		t.Fatalf("stand-in answers %d, default answers %d; want at least 1 and 1", st.StandinAnswers, defaults(st))
	}
	h.rec.waitFor(t, "the stand-in's deny", kind(fsmon.KindDenied, secret))
	release()
	// Back to deciding: denied again.
	eventually(t, "the loop decides again", func() error { return denied(secret) })
}

// TestObjectLimitSparesBlockFilters: --watch.max-objects bounds what
// monitor-only filters follow, never what a block filter covers: past
// the limit, every file of a block filter still has marks of its own
// (a hard link made elsewhere is denied too), and the engine is ready.
// A monitor filter beside it is cut, counted and makes it not ready.
func TestObjectLimitSparesBlockFilters(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	logs := filepath.Join(dir, "logs")
	for _, d := range []string{keys, logs} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 30; i++ {
			writeFile(t, filepath.Join(d, "f"+strconv.Itoa(i)), "x")
		}
	}
	// Subdirectories too, reached when the tables hold more than the
	// limit already.
	sub := filepath.Join(keys, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(sub, "deep"), "x")
	testroot.Require(t)
	e := runEngine(t, Options{Sink: newRecorder(), MaxObjects: 10, DecisionTimeout: 2 * time.Second})
	block := "profiles:\n  - name: t\n    host: true\n    mode: protect\n    filters:\n      - path: " + keys + "\n        recursive: true\n        behavior: block\n        allow: [/usr/bin/head]\n"
	res, err := e.Apply(compile(t, block))
	if err != nil || res.Incomplete || !e.Ready() || res.Files != 31 {
		t.Fatalf("a block filter past the object limit: err %v, result %+v, ready %v", err, res, e.Ready())
	}
	if n := e.Snapshot().Unmarked; n != 0 {
		t.Fatalf("%d objects unmarked", n)
	}
	for i, f := range []string{filepath.Join(keys, "f0"), filepath.Join(keys, "f29"), filepath.Join(sub, "deep")} {
		mustDeny(t, cmd(t, "cat", f))
		link := filepath.Join(dir, "link"+strconv.Itoa(i))
		if err := os.Link(f, link); err != nil {
			t.Fatal(err)
		}
		mustDeny(t, cmd(t, "cat", link)) // by its own marks, not its name
	}
	res, err = e.Apply(compile(t, block+"      - path: "+logs+"\n"))
	if !errors.Is(err, ErrTooMany) || !res.Incomplete || e.Ready() || res.Files < 31 {
		t.Fatalf("a monitor filter past the limit: err %v, result %+v, ready %v", err, res, e.Ready())
	}
	if n := e.Snapshot().Unmarked; n == 0 {
		t.Fatal("the objects cut by the limit are not counted")
	}
	mustDeny(t, cmd(t, "cat", filepath.Join(keys, "f29")))
}

// TestFailedPermissionMarkIsNotReady: a block filter whose file cannot
// get a permission mark (the kernel refuses them on /proc) leaves the
// configuration partly in force: Apply says so, the object is counted,
// and the engine is not ready (/-/ready 503, fsmon_ready 0).
func TestFailedPermissionMarkIsNotReady(t *testing.T) {
	testroot.Require(t)
	e := runEngine(t, Options{Sink: newRecorder()})
	res, err := e.Apply(compile(t, blockFile("protect", "/proc/version", "/usr/bin/head")))
	if !errors.Is(err, ErrPartial) || !res.Incomplete || res.Errors == 0 || e.Ready() || e.Snapshot().Unmarked == 0 {
		t.Fatalf("a permission mark the kernel refused: err %v, result %+v, ready %v", err, res, e.Ready())
	}
}

// runEngine runs an engine with opts until the test ends, without
// applying a policy (start does, and fails the test if it is not all in
// force): for tests of Apply's result itself.
func runEngine(t *testing.T, opts Options) *Engine {
	t.Helper()
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return e
}

// TestStuckStandinsAreReplacedThenLastResort: when every decision hangs
// (the loop's and each stand-in's), each open gets the default answer at
// the deadline and is reported; each stuck stand-in is replaced by a
// fresh one, at most maxStandins of them, and past that the last-resort
// reader answers without deciding. Nothing waits for a stuck reader.
func TestStuckStandinsAreReplacedThenLastResort(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s")
	h, release := startSlow(t, protectFile("protect", secret), FailClosed)
	const opens = maxStandins + 2 // the loop, each stand-in, the last resort
	for i := 0; i < opens; i++ {
		// head is allowed, but no decision ends: the default, deny.
		mustDeny(t, cmd(t, "head", secret))
	}
	timeoutsAtLeast(t, h, opens)
	st := h.Snapshot()
	if st.StandinReaders[fsmon.ReaderStandin] != maxStandins || st.StandinReaders[fsmon.ReaderLastResort] != 1 || st.DecisionTimeouts[fsmon.AnswerDeny] != opens || st.StandinAnswers != 0 {
		t.Fatalf("readers started %v, default answers %v, stand-in answers %d; want %d stand-ins, 1 last resort, %d denies",
			st.StandinReaders, st.DecisionTimeouts, st.StandinAnswers, maxStandins, opens)
	}
	eventually(t, "every default answer reported", func() error {
		n := 0
		for _, ev := range h.rec.all() {
			if ev.Kind == fsmon.KindTimeout && ev.Answer == fsmon.AnswerDeny && ev.Path == secret {
				n++
			}
		}
		if n != opens {
			return fmt.Errorf("%d timeout events, want %d", n, opens)
		}
		return nil
	})
	release()
}

// TestWatchdogHandsUnbegunEventsOn: when a reader is stuck, the events
// of its batch whose decision has not begun are not answered with the
// default: the watchdog hands them to another reader, which decides
// them with the policy (a process outside the allow list: denied, and
// reported so). The stuck batch is built by hand, so that it holds an
// event behind the stuck one whatever the kernel batches.
func TestWatchdogHandsUnbegunEventsOn(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	writeFile(t, secret, "s")
	h := start(t, protectFile("protect", secret), func(o *Options) { o.DecisionTimeout = 100 * time.Millisecond })
	outsider := exec.Command("sleep", "60")
	if err := outsider.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { outsider.Process.Kill(); outsider.Wait() })
	f, err := os.Open(secret) // our own open: answered at once
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Dup(int(f.Fd())) // the reader that decides it closes it
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pid := int32(outsider.Process.Pid)
	b := &permBatch{}
	gen := b.gen.Add(1)
	s := &b.slots[0]
	s.fd, s.pid, s.mask = int32(fd), pid, fanotify.OpenPerm
	s.state.Store(gen << slotBits)
	b.n.Store(1)
	b.readAt.Store(time.Now().UnixNano())
	b.start.Store(time.Now().Add(-time.Second).UnixNano()) // its reader: stuck
	if !h.rescueBatch(b, fanotify.Allow) {
		t.Fatal("the watchdog did not find the batch stuck")
	}
	if st := s.state.Load(); st != gen<<slotBits|slotHanded {
		t.Fatalf("slot state %d, want handed (%d)", st&slotMask, slotHanded)
	}
	h.rec.waitFor(t, "the handed open decided", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Process.PID == pid && ev.Path == secret
	})
	if n := defaults(h.Snapshot()); n != 0 {
		t.Fatalf("%d default answers, want 0", n)
	}
}
