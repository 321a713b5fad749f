package otel

import (
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otellog "go.opentelemetry.io/otel/log"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// The fsmon keys of the README's Events section. They carry no namespace
// because they are the same keys as the JSON lines on stdout.
const (
	keyEvent   = attribute.Key("event")
	keyOp      = attribute.Key("op")
	keyMode    = attribute.Key("mode")
	keyProfile = attribute.Key("profile")
	keyFilter  = attribute.Key("filter")
	// keyLoaderEnv has no semantic convention: what the loader was told
	// that kept the process from matching an executable allow entry.
	keyLoaderEnv = attribute.Key("process.loader_env")
	// The parent's executable and command line have no semantic
	// convention (only process.parent_pid does): the keys nest the
	// process's own under process.parent, as the Elastic Common Schema,
	// which OpenTelemetry's conventions are merging with, names them
	// (docs/design/process.md).
	keyParentExePath = attribute.Key("process.parent.executable.path")
	keyParentExeName = attribute.Key("process.parent.executable.name")
	keyParentCmdline = attribute.Key("process.parent.command_line")
	keyCount         = attribute.Key("count")
	keyAnswer        = attribute.Key("answer")
	keyReason        = attribute.Key("reason")
	// keyProcessUnknown says that no process could be seen: a change
	// made while the daemon was down.
	keyProcessUnknown = attribute.Key("process.unknown")
)

// maxAttrs is the most attributes an event carries, so that one slice
// allocation holds them all.
const maxAttrs = 48

// attributes turns ev into record/span attributes. Unknown values are left
// out, never filled in: zero pids, empty strings, a negative user id.
func attributes(ev *fsmon.Event, buf []attribute.KeyValue) []attribute.KeyValue {
	kv := buf[:0]
	kv = append(kv, keyEvent.String(ev.Kind.String()))
	if ev.Op != 0 {
		kv = append(kv, keyOp.String(ev.Op.String()))
	}
	if ev.Mode != 0 {
		kv = append(kv, keyMode.String(ev.Mode.String()))
	}
	kv = appendString(kv, keyProfile, ev.Profile)
	kv = appendString(kv, keyFilter, ev.Filter)
	kv = appendString(kv, semconv.FilePathKey, ev.Path)
	p := &ev.Process
	if p.PID > 0 {
		kv = append(kv, semconv.ProcessPIDKey.Int64(int64(p.PID)))
	}
	if p.ParentPID > 0 {
		kv = append(kv, semconv.ProcessParentPIDKey.Int64(int64(p.ParentPID)))
	}
	kv = appendString(kv, semconv.ProcessExecutablePathKey, p.ExecutablePath)
	kv = appendString(kv, semconv.ProcessExecutableNameKey, p.ExecutableName)
	kv = appendString(kv, semconv.ProcessCommandLineKey, p.CommandLine)
	kv = appendString(kv, keyLoaderEnv, p.LoaderEnv.String())
	if p.UserID >= 0 {
		// uid 0 is root, not unknown: the engine writes -1 for unknown.
		kv = append(kv, semconv.ProcessUserIDKey.Int64(p.UserID))
	}
	kv = appendString(kv, semconv.ProcessUserNameKey, p.UserName)
	kv = appendString(kv, keyParentExePath, p.ParentExecutablePath)
	kv = appendString(kv, keyParentExeName, p.ParentExecutableName)
	kv = appendString(kv, keyParentCmdline, p.ParentCommandLine)
	kv = appendString(kv, semconv.ContainerIDKey, ev.Container.ID)
	kv = appendString(kv, semconv.ContainerNameKey, ev.Container.Name)
	kv = appendString(kv, semconv.ContainerImageNameKey, ev.Container.Image)
	kv = appendString(kv, semconv.K8SNamespaceNameKey, ev.Container.Pod.Namespace)
	kv = appendString(kv, semconv.K8SPodNameKey, ev.Container.Pod.Name)
	kv = appendString(kv, semconv.K8SPodUIDKey, ev.Container.Pod.UID)
	kv = appendString(kv, semconv.K8SContainerNameKey, ev.Container.Pod.ContainerName)
	if ev.Answer != 0 {
		kv = append(kv, keyAnswer.String(ev.Answer.String()))
	}
	if ev.Reason != 0 {
		kv = append(kv, keyReason.String(ev.Reason.String()))
		if ev.Reason.ProcessUnknown() {
			kv = append(kv, keyProcessUnknown.Bool(true))
		}
	}
	if ev.File != nil || ev.Previous != nil {
		a := fileAttrs{kv}
		ev.File.Report(fsmon.FileKeysNow, &a)
		ev.Previous.Report(fsmon.FileKeysPrevious, &a)
		kv = a.kv
	}
	count := ev.Count
	if count <= 0 {
		count = 1
	}
	kv = append(kv, keyCount.Int64(int64(count)))
	return kv
}

// fileAttrs appends the file.* attributes of change events; the keys
// are the semantic conventions' (file.size, file.mode, file.owner.id,
// ...), the hash ECS's file.hash.sha256.
type fileAttrs struct{ kv []attribute.KeyValue }

func (a *fileAttrs) String(key, v string)    { a.kv = append(a.kv, attribute.String(key, v)) }
func (a *fileAttrs) Int(key string, v int64) { a.kv = append(a.kv, attribute.Int64(key, v)) }

func appendString(kv []attribute.KeyValue, k attribute.Key, v string) []attribute.KeyValue {
	if v == "" {
		return kv
	}
	return append(kv, k.String(v))
}

// severity is WARN for what a security team acts on (denied, violation,
// an open the policy did not answer), INFO for the rest.
func severity(k fsmon.Kind) (otellog.Severity, string) {
	switch k {
	case fsmon.KindDenied, fsmon.KindViolation, fsmon.KindTimeout:
		return otellog.SeverityWarn, "WARN"
	default:
		return otellog.SeverityInfo, "INFO"
	}
}

// eventNames are precomputed so that the hot loop does not concatenate.
var eventNames = func() map[fsmon.Kind]string {
	m := make(map[fsmon.Kind]string, len(fsmon.Kinds))
	for _, k := range fsmon.Kinds {
		m[k] = "fsmon.file." + k.String()
	}
	return m
}()

func eventName(k fsmon.Kind) string {
	if n, ok := eventNames[k]; ok {
		return n
	}
	return "fsmon.file." + k.String()
}

// record fills r from ev. The body is a one-line summary for log stores
// that show only the body; every fact in it is also an attribute.
func record(r *otellog.Record, ev *fsmon.Event, now time.Time, buf []attribute.KeyValue) {
	r.SetEventName(eventName(ev.Kind))
	r.SetTimestamp(ev.Time)
	r.SetObservedTimestamp(now)
	sev, text := severity(ev.Kind)
	r.SetSeverity(sev)
	r.SetSeverityText(text)
	r.SetBody(attribute.StringValue(summary(ev)))
	r.AddAttributes(attributes(ev, buf)...)
}

func summary(ev *fsmon.Event) string {
	b := make([]byte, 0, 64+len(ev.Path)+len(ev.Process.ExecutableName))
	b = append(b, ev.Kind.String()...)
	if ev.Op != 0 {
		b = append(b, ' ')
		b = append(b, ev.Op.String()...)
	}
	if ev.Path != "" {
		b = append(b, ' ')
		b = append(b, ev.Path...)
	}
	if ev.Process.ExecutableName != "" || ev.Process.PID > 0 {
		b = append(b, " by "...)
		b = append(b, ev.Process.ExecutableName...)
		if ev.Process.PID > 0 {
			b = append(b, " (pid "...)
			b = strconv.AppendInt(b, int64(ev.Process.PID), 10)
			b = append(b, ')')
		}
	}
	if ev.Container.Name != "" {
		b = append(b, " in "...)
		b = append(b, ev.Container.Name...)
	}
	if ev.Count > 1 {
		b = append(b, " (count "...)
		b = strconv.AppendInt(b, int64(ev.Count), 10)
		b = append(b, ')')
	}
	return string(b)
}
