package fsmon

// Reason says why an event is not the plain report of an open the
// daemon judged: the `reason` key of a report, left out when zero.
type Reason uint8

const (
	// ReasonDeadline: a timeout event's decision was stuck past
	// --permission.timeout.
	ReasonDeadline Reason = iota + 1
	// ReasonPanic: a timeout event's decision failed (a bug).
	ReasonPanic
	// ReasonOpenedBefore: a descriptor of a covered file, held by a
	// process the filter does not allow, that was opened before the file
	// was protected (before the daemon started, while it was down, or
	// before a reload or a container's walk covered it). The kernel
	// judges opens, so nothing denied it: the scan of /proc found it.
	ReasonOpenedBefore
	// ReasonWhileDown: a change event of a watched file that was
	// created, deleted or changed while the daemon was not running,
	// found at its start by comparing the files with the baseline kept
	// in --state.dir. Nobody saw who made it: the process is unknown
	// (ProcessUnknown).
	ReasonWhileDown
)

var reasonNames = [...]string{"", "deadline", "panic", "opened before protection", "changed while down"}

// ProcessUnknown reports whether events of this reason have no process
// because none could be seen: the process.unknown key.
func (r Reason) ProcessUnknown() bool { return r == ReasonWhileDown }

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown"
}

// FilterCount is a number for one (profile, filter).
type FilterCount struct {
	Profile, Filter string
	Count           int
}
