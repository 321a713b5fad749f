package fsmon

import (
	"time"
)

// Kind is what happened to a file, the `event` key of a report.
type Kind uint8

const (
	KindAccess    Kind = iota + 1 // an allowed open reported because of report_access
	KindChange                    // the file was written, created, deleted, renamed or its attributes changed
	KindViolation                 // a block filter would have denied, but the mode is monitor
	KindDenied                    // the open failed with EPERM
	KindLearned                   // a block filter would have denied, but the mode is learn
	KindTimeout                   // a permission event answered by the configured default, not the policy
)

var kindNames = [...]string{"", "access", "change", "violation", "denied", "learned", "timeout"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Kinds lists every Kind, for label pre-population.
var Kinds = []Kind{KindAccess, KindChange, KindViolation, KindDenied, KindLearned, KindTimeout}

// Answer is what the kernel was told of an open, the `answer` key of a
// timeout report.
type Answer uint8

const (
	AnswerAllow Answer = iota + 1
	AnswerDeny
)

var answerNames = [...]string{"", "allow", "deny"}

func (a Answer) String() string {
	if int(a) < len(answerNames) {
		return answerNames[a]
	}
	return "unknown"
}

// Answers lists every Answer, for label pre-population.
var Answers = []Answer{AnswerAllow, AnswerDeny}

// Op is the operation behind an event, the `op` key of a report.
type Op uint8

const (
	OpOpen Op = iota + 1
	OpRead
	OpWrite
	OpExec
	OpCreate
	OpDelete
	OpRename
	OpAttrib
	// OpTruncate and OpAccess are content events of a protected file
	// (docs/content-ops.md): a truncate to a page boundary, and a read,
	// write, mmap or other truncate, which the kernel's event does not
	// tell apart. OpRead is a read (FAN_ACCESS_PERM).
	OpTruncate
	OpAccess
)

var opNames = [...]string{"", "open", "read", "write", "exec", "create", "delete", "rename", "attrib", "truncate", "access"}

func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return "unknown"
}

// Ops lists every Op.
var Ops = []Op{OpOpen, OpRead, OpWrite, OpExec, OpCreate, OpDelete, OpRename, OpAttrib, OpTruncate, OpAccess}

// Mode is how a block filter's verdict is enforced.
type Mode uint8

const (
	ModeLearn Mode = iota + 1
	ModeMonitor
	ModeProtect
)

var modeNames = [...]string{"", "learn", "monitor", "protect"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return "unknown"
}

// ParseMode turns a configuration word into a Mode.
func ParseMode(s string) (Mode, bool) {
	for i, n := range modeNames {
		if i > 0 && n == s {
			return Mode(i), true
		}
	}
	return 0, false
}

// Process is what is known of the process behind an event. Zero values
// mean unknown and are left out of reports.
type Process struct {
	PID            int32
	ParentPID      int32
	ExecutablePath string // /proc/PID/exe as the process sees it
	ExecutableName string // comm
	CommandLine    string // arguments joined by spaces
	UserID         int64  // effective uid; -1 when unknown
	// UserName is UserID's name in the /etc/passwd of the process's
	// root (a container's own for its processes).
	UserName string
	// The parent's executable (as ExecutablePath), name (comm) and
	// command line, as known when the process exec'd or was forked.
	ParentExecutablePath string
	ParentExecutableName string
	ParentCommandLine    string
	// LoaderEnv is set when what the loader was told at exec kept the
	// process from matching an executable allow entry.
	LoaderEnv LoaderEnv
}

// Container names the container an event came from; empty on the host.
// Every field comes from the container's runtime, none from the
// container. It is a value of strings only, so that events compare
// (folding) and copy without allocation.
type Container struct {
	ID    string // full id as the runtime writes it
	Name  string // the runtime's name; for a pod's container its name in the pod spec
	Image string
	// Pod is set for the containers of Kubernetes pods.
	Pod Pod
}

// Pod is the Kubernetes identity of a container: the k8s.* keys of
// OpenTelemetry's semantic conventions. Zero outside Kubernetes.
type Pod struct {
	Namespace, Name, UID string
	// ContainerName is the container's name in the pod spec.
	ContainerName string
}

// Event is one report of the engine. Events are values: a sink may keep
// them.
type Event struct {
	Time      time.Time // when the kernel saw it (as close as user space can tell)
	Kind      Kind
	Op        Op
	Mode      Mode
	Profile   string
	Filter    string
	Path      string // as the process sees it, inside its container
	Process   Process
	Container Container
	Count     int // 1, or the number of identical events folded into this one

	// Decision is set on events that came from a permission decision:
	// how long the decision took, read to answer written.
	Decision time.Duration

	// Answer is set on timeout events only: the default answer the
	// kernel got (Reason says why).
	Answer Answer
	// Reason, when set, says why the event is not the plain report of
	// an open the daemon judged: a timeout's cause, a descriptor opened
	// before protection, a change made while the daemon was down.
	Reason Reason

	// File and Previous are set on change events of watched regular
	// files: what the file is after the change (nil when it is gone)
	// and what it was before it (nil when it is new to the daemon).
	// They point at values nobody changes.
	File, Previous *FileFacts
}

// Sink receives every event the engine reports, in order, from one
// goroutine. Handle must not block for long: the engine's report queue is
// bounded and what does not fit is dropped and counted.
type Sink interface {
	Handle(ev *Event)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ev *Event)

func (f SinkFunc) Handle(ev *Event) { f(ev) }

// Sinks hands every event to each of its sinks in order.
type Sinks []Sink

func (s Sinks) Handle(ev *Event) {
	for _, k := range s {
		k.Handle(ev)
	}
}
