package jsonl

import (
	"bytes"
	"context"
	"encoding/json"
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
		Process: fsmon.Process{PID: 42, ParentPID: 1, ExecutablePath: "/usr/bin/cat", ExecutableName: "cat", CommandLine: "cat /etc/shadow", UserID: 0},
		Count:   1,
	}
	got := string(Append(nil, &ev))
	want := `{"time":"2026-12-01T08:00:00.123456789Z","event":"denied","op":"open","mode":"protect","profile":"host","filter":"shadow","file.path":"/etc/shadow","process.pid":42,"process.parent_pid":1,"process.executable.path":"/usr/bin/cat","process.executable.name":"cat","process.command_line":"cat /etc/shadow","process.user.id":0,"count":1}`
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
	for _, k := range []string{"process.pid", "process.user.id", "container.id", "file.path"} {
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
// nobody reads.
type blockedWriter struct{ release chan struct{} }

func (b blockedWriter) Write(p []byte) (int, error) { <-b.release; return len(p), nil }

func TestQueueNeverBlocksAndCountsDrops(t *testing.T) {
	bw := blockedWriter{release: make(chan struct{})}
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
}
