// Package jsonl writes each event as one JSON object on one line, with
// the keys of the event contract (README.md, section Events): the same
// keys as the OpenTelemetry record's attributes. Keys whose value is
// unknown are left out, never invented.
package jsonl

import (
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// Writer is an fsmon.Sink that writes JSON lines.
type Writer struct {
	mu     sync.Mutex
	w      io.Writer
	buf    []byte
	log    *slog.Logger
	failed bool
}

// New returns a Writer on w.
func New(w io.Writer, logger *slog.Logger) *Writer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Writer{w: w, buf: make([]byte, 0, 1024), log: logger}
}

// Handle writes one line. A failing stdout (a closed pipe) is logged
// once and otherwise ignored: it must not stop the engine.
func (w *Writer) Handle(ev *fsmon.Event) { w.write(ev) }

// write writes one line and reports whether it was written; a Queue
// counts a line that was not as a lost event.
func (w *Writer) write(ev *fsmon.Event) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = Append(w.buf[:0], ev)
	w.buf = append(w.buf, '\n')
	if _, err := w.w.Write(w.buf); err != nil {
		if !w.failed {
			w.failed = true
			w.log.Error("writing events to stdout failed; further errors are not logged, the events lost are counted", "err", err)
		}
		return false
	}
	return true
}

// Append appends the JSON object of ev to b.
func Append(b []byte, ev *fsmon.Event) []byte {
	b = append(b, `{"time":"`...)
	b = ev.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	b = str(b, "event", ev.Kind.String())
	if ev.Op != 0 {
		b = str(b, "op", ev.Op.String())
	}
	if ev.Mode != 0 {
		b = str(b, "mode", ev.Mode.String())
	}
	b = str(b, "profile", ev.Profile)
	b = str(b, "filter", ev.Filter)
	b = str(b, "file.path", ev.Path)
	p := &ev.Process
	b = num(b, "process.pid", int64(p.PID), p.PID > 0)
	b = num(b, "process.parent_pid", int64(p.ParentPID), p.ParentPID > 0)
	b = str(b, "process.executable.path", p.ExecutablePath)
	b = str(b, "process.executable.name", p.ExecutableName)
	b = str(b, "process.command_line", p.CommandLine)
	b = num(b, "process.user.id", p.UserID, p.UserID >= 0 && p.PID > 0)
	b = str(b, "process.user.name", p.UserName)
	b = str(b, "process.parent.executable.path", p.ParentExecutablePath)
	b = str(b, "process.parent.executable.name", p.ParentExecutableName)
	b = str(b, "process.parent.command_line", p.ParentCommandLine)
	b = str(b, "process.loader_env", p.LoaderEnv.String())
	b = str(b, "container.id", ev.Container.ID)
	b = str(b, "container.name", ev.Container.Name)
	b = str(b, "container.image.name", ev.Container.Image)
	b = str(b, "k8s.namespace.name", ev.Container.Pod.Namespace)
	b = str(b, "k8s.pod.name", ev.Container.Pod.Name)
	b = str(b, "k8s.pod.uid", ev.Container.Pod.UID)
	b = str(b, "k8s.container.name", ev.Container.Pod.ContainerName)
	if ev.Answer != 0 {
		b = str(b, "answer", ev.Answer.String())
	}
	if ev.Reason != 0 {
		b = str(b, "reason", ev.Reason.String())
		if ev.Reason.ProcessUnknown() {
			b = append(b, `,"process.unknown":true`...)
		}
	}
	if ev.File != nil || ev.Previous != nil {
		a := fileAttrs{b}
		ev.File.Report(fsmon.FileKeysNow, &a)
		ev.Previous.Report(fsmon.FileKeysPrevious, &a)
		b = a.b
	}
	count := ev.Count
	if count < 1 {
		count = 1
	}
	b = num(b, "count", int64(count), true)
	return append(b, '}')
}

// fileAttrs appends the file.* keys of change events.
type fileAttrs struct{ b []byte }

func (a *fileAttrs) String(key, v string)    { a.b = str(a.b, key, v) }
func (a *fileAttrs) Int(key string, v int64) { a.b = num(a.b, key, v, true) }

func str(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return quote(b, v)
}

func num(b []byte, key string, v int64, ok bool) []byte {
	if !ok {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, key...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, v, 10)
}

const hex = "0123456789abcdef"

// quote appends s as a JSON string. Bytes that are not valid UTF-8 (file
// names are bytes) become U+FFFD, as encoding/json does.
func quote(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
