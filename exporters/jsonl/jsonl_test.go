package jsonl

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

func TestAppendKeys(t *testing.T) {
	ev := fsmon.Event{
		Time:    time.Date(2026, 12, 1, 8, 0, 0, 123456789, time.UTC),
		Kind:    fsmon.KindDenied,
		Op:      fsmon.OpOpen,
		Mode:    fsmon.ModeProtect,
		Profile: "host",
		Filter:  "shadow",
		Path:    "/etc/shadow",
		Process: fsmon.Process{PID: 42, ParentPID: 1, ExecutablePath: "/usr/bin/cat", ExecutableName: "cat", CommandLine: "cat /etc/shadow", UserID: 0, LoaderEnv: fsmon.LoaderPreload | fsmon.LoaderAudit,
			UserName: "root", ParentExecutablePath: "/usr/bin/bash", ParentExecutableName: "bash", ParentCommandLine: "bash -l"},
		Count: 1,
	}
	got := string(Append(nil, &ev))
	want := `{"time":"2026-12-01T08:00:00.123456789Z","event":"denied","op":"open","mode":"protect","profile":"host","filter":"shadow","file.path":"/etc/shadow","process.pid":42,"process.parent_pid":1,"process.executable.path":"/usr/bin/cat","process.executable.name":"cat","process.command_line":"cat /etc/shadow","process.user.id":0,"process.user.name":"root","process.parent.executable.path":"/usr/bin/bash","process.parent.executable.name":"bash","process.parent.command_line":"bash -l","process.loader_env":"LD_PRELOAD,LD_AUDIT","count":1}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// A pod's container: the container keys, then the pod's (OpenTelemetry's
// semantic conventions), after the process.
func TestAppendContainerKeys(t *testing.T) {
	ev := fsmon.Event{
		Time: time.Unix(0, 0), Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Count: 1,
		Container: fsmon.Container{ID: "abc", Name: "app", Image: "registry/app:2",
			Pod: fsmon.Pod{Namespace: "prod", Name: "api-7d9f", UID: "0c1d-22", ContainerName: "app"}},
	}
	got := string(Append(nil, &ev))
	want := `{"time":"1970-01-01T00:00:00Z","event":"denied","op":"open","container.id":"abc","container.name":"app","container.image.name":"registry/app:2",` +
		`"k8s.namespace.name":"prod","k8s.pod.name":"api-7d9f","k8s.pod.uid":"0c1d-22","k8s.container.name":"app","count":1}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestReasonKey(t *testing.T) {
	ev := fsmon.Event{Time: time.Unix(0, 0), Kind: fsmon.KindViolation, Op: fsmon.OpOpen, Reason: fsmon.ReasonOpenedBefore, Count: 1}
	got := string(Append(nil, &ev))
	want := `{"time":"1970-01-01T00:00:00Z","event":"violation","op":"open","reason":"opened before protection","count":1}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

// A default answer is reported with what is known without blocking: the
// op, the path, the pid, the answer and why.
func TestAppendTimeout(t *testing.T) {
	ev := fsmon.Event{
		Time:    time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC),
		Kind:    fsmon.KindTimeout,
		Op:      fsmon.OpOpen,
		Path:    "/etc/shadow",
		Process: fsmon.Process{PID: 42, UserID: -1},
		Count:   1,
		Answer:  fsmon.AnswerAllow,
		Reason:  fsmon.ReasonDeadline,
	}
	got := string(Append(nil, &ev))
	want := `{"time":"2026-12-01T08:00:00Z","event":"timeout","op":"open","file.path":"/etc/shadow","process.pid":42,"answer":"allow","reason":"deadline","count":1}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestUnknownLeftOut(t *testing.T) {
	ev := fsmon.Event{Time: time.Unix(0, 0), Kind: fsmon.KindChange, Op: fsmon.OpWrite, Process: fsmon.Process{UserID: -1}}
	var m map[string]any
	if err := json.Unmarshal(Append(nil, &ev), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"process.pid", "process.user.id", "container.id", "file.path", "process.loader_env", "answer", "reason"} {
		if _, ok := m[k]; ok {
			t.Errorf("key %s present though unknown: %v", k, m)
		}
	}
}

func FuzzQuote(f *testing.F) {
	for _, s := range []string{"", "a", "\x00\xff\"\\\n", "日本\u2028", "/etc/\x7fx"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := quote(nil, s)
		var out string
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("quote(%q) = %s: not JSON: %v", s, b, err)
		}
		want, _ := json.Marshal(s)
		var w string
		json.Unmarshal(want, &w)
		if out != w {
			t.Fatalf("quote(%q) decodes to %q, encoding/json gives %q", s, out, w)
		}
	})
}

func TestWriterLines(t *testing.T) {
	var buf bytes.Buffer
	w := New(&buf, nil)
	ev := fsmon.Event{Time: time.Unix(1, 0), Kind: fsmon.KindAccess, Op: fsmon.OpOpen, Path: "a\nb"}
	w.Handle(&ev)
	w.Handle(&ev)
	if n := bytes.Count(buf.Bytes(), []byte("\n")); n != 2 {
		t.Fatalf("want 2 lines, got %d: %q", n, buf.String())
	}
}

// blockedWriter never returns from Write until released: a stdout
// nobody reads. It counts the lines it took.
type blockedWriter struct {
	release chan struct{}
	lines   *atomic.Int64
}

func (b blockedWriter) Write(p []byte) (int, error) {
	<-b.release
	b.lines.Add(int64(bytes.Count(p, []byte("\n"))))
	return len(p), nil
}

// Behind a stalled writer Handle never blocks, and every event is either
// written or counted: written + dropped == handed over, exactly, once
// Close has drained the queue.
func TestQueueNeverBlocksAndCountsDrops(t *testing.T) {
	bw := blockedWriter{release: make(chan struct{}), lines: new(atomic.Int64)}
	q := NewQueue(New(bw, nil), 10)
	ev := fsmon.Event{Time: time.Unix(1, 0), Kind: fsmon.KindDenied, Op: fsmon.OpOpen}
	done := make(chan struct{})
	go func() {
		for i := 0; i < 1000; i++ {
			q.Handle(&ev)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Handle blocked behind a stalled writer")
	}
	// One event may be in the blocked Write, ten in the queue.
	if d := q.Dropped(); d < 1000-11 || d > 1000-10 {
		t.Fatalf("dropped %d of 1000 with a queue of 10", d)
	}
	close(bw.release)
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w, d := bw.lines.Load(), q.Dropped(); uint64(w)+d != 1000 {
		t.Fatalf("written %d + dropped %d != 1000", w, d)
	}
	q.Handle(&ev) // after Close: counted
	if d := q.Dropped(); uint64(bw.lines.Load())+d != 1001 {
		t.Fatalf("an event after Close was not counted: dropped %d", d)
	}
}

// failingWriter is a stdout whose reader went away.
type failingWriter struct{ calls *atomic.Int64 }

func (f failingWriter) Write(p []byte) (int, error) {
	f.calls.Add(1)
	return 0, syscall.EPIPE
}

// An event that cannot be written (EPIPE: the reader went away) is lost,
// so counted; the failure is logged once.
func TestQueueCountsFailedWrites(t *testing.T) {
	fw := failingWriter{calls: new(atomic.Int64)}
	var log bytes.Buffer
	q := NewQueue(New(fw, slog.New(slog.NewTextHandler(&log, nil))), 100)
	ev := fsmon.Event{Time: time.Unix(1, 0), Kind: fsmon.KindDenied, Op: fsmon.OpOpen}
	for range 7 {
		q.Handle(&ev) // 7 < 100: none finds the queue full
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := fw.calls.Load(); n != 7 {
		t.Fatalf("%d writes tried, want 7", n)
	}
	if d := q.Dropped(); d != 7 {
		t.Fatalf("dropped %d, want the 7 events that could not be written", d)
	}
	if n := strings.Count(log.String(), "writing events to stdout failed"); n != 1 {
		t.Fatalf("the failure logged %d times, want once:\n%s", n, log.String())
	}
}

// A folded event of count n stands for n events: lost, it counts n, the
// way fsmon_events_total counted it. Every way of losing one: the queue
// full, after Close, a failed write, and what Close's deadline leaves
// queued.
func TestQueueCountsFoldedEvents(t *testing.T) {
	folded := fsmon.Event{Time: time.Unix(1, 0), Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Count: 3}

	bw := blockedWriter{release: make(chan struct{}), lines: new(atomic.Int64)}
	q := NewQueue(New(bw, nil), 1)
	for range 10 {
		q.Handle(&folded) // 1 or 2 held (queue, blocked Write), the rest full
	}
	if d := q.Dropped(); d != 8*3 && d != 9*3 {
		t.Fatalf("dropped %d with 8 or 9 folded events of 3 lost", d)
	}
	close(bw.release)
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w, d := uint64(bw.lines.Load()), q.Dropped(); 3*w+d != 30 {
		t.Fatalf("written %d lines of 3 + dropped %d != 30 events", w, d)
	}
	before := q.Dropped()
	q.Handle(&folded)
	if d := q.Dropped() - before; d != 3 {
		t.Fatalf("a folded event after Close counted %d, want 3", d)
	}

	fw := failingWriter{calls: new(atomic.Int64)}
	q = NewQueue(New(fw, nil), 10)
	q.Handle(&folded)
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if d := q.Dropped(); d != 3 {
		t.Fatalf("a folded event that could not be written counted %d, want 3", d)
	}

	// Close gives up on a writer stuck for good: what is queued is lost,
	// counted in events, once: the stuck goroutine never writes it.
	stuck := blockedWriter{release: make(chan struct{}), lines: new(atomic.Int64)}
	defer close(stuck.release)
	q = NewQueue(New(stuck, nil), 4)
	first := folded
	first.Count = 5
	q.Handle(&first)
	// Wait until the writer goroutine holds the first (stuck in Write):
	// then the queue is empty and takes four more.
	for len(q.ch) != 0 {
		runtime.Gosched()
	}
	for range 4 {
		q.Handle(&folded)
	}
	if d := q.Dropped(); d != 0 {
		t.Fatalf("dropped %d before Close with room in the queue", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.Close(ctx); err == nil {
		t.Fatal("Close with a stuck writer and an ended context returned nil")
	}
	if d := q.Dropped(); d != 4*3 {
		t.Fatalf("Close's deadline counted %d lost, want the 4 queued events of 3 (the one in the stuck Write is not counted)", d)
	}
}

// A change event's facts: what the file is under file.*, what it was
// under file.previous.*, after the other keys; a hash not computed is
// said so, and a change made while the daemon was down says that its
// process is unknown.
func TestAppendFileFacts(t *testing.T) {
	after := &fsmon.FileFacts{Size: 5, Mode: 0o4750, UID: 0, GID: 42, OwnerName: "root", GroupName: "shadow",
		Mtime: time.Date(2026, 12, 1, 8, 0, 0, 5, time.UTC), SHA256: [32]byte{0xab, 0x01}, Hash: fsmon.HashComputed}
	before := &fsmon.FileFacts{Size: 1 << 40, Mode: 0o644, UID: 1000, GID: 1000, Mtime: time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC), Hash: fsmon.HashSkippedSize}
	ev := fsmon.Event{Time: time.Unix(0, 0), Kind: fsmon.KindChange, Op: fsmon.OpRename, Path: "/etc/shadow", Process: fsmon.Process{UserID: -1},
		Reason: fsmon.ReasonWhileDown, File: after, Previous: before, Count: 1}
	got := string(Append(nil, &ev))
	want := `{"time":"1970-01-01T00:00:00Z","event":"change","op":"rename","file.path":"/etc/shadow","reason":"changed while down","process.unknown":true,` +
		`"file.size":5,"file.mode":"4750","file.owner.id":"0","file.owner.name":"root","file.group.id":"42","file.group.name":"shadow","file.mtime":"2026-12-01T08:00:00.000000005Z",` +
		`"file.hash.sha256":"ab01000000000000000000000000000000000000000000000000000000000000",` +
		`"file.previous.size":1099511627776,"file.previous.mode":"0644","file.previous.owner.id":"1000","file.previous.group.id":"1000","file.previous.mtime":"2026-11-01T08:00:00Z","file.previous.hash.skipped":"size","count":1}`
	if got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(got), &m); err != nil {
		t.Fatal(err)
	}
}
