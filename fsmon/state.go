package fsmon

// MarkType is the kind of object a fanotify mark is on.
type MarkType uint8

const (
	MarkFile MarkType = iota + 1 // an inode mark on a non-directory
	MarkDir                      // an inode mark on a directory (covers its direct children)
	MarkMount
	MarkFilesystem
)

var markTypeNames = [...]string{"", "file", "dir", "mount", "filesystem"}

func (t MarkType) String() string {
	if int(t) < len(markTypeNames) {
		return markTypeNames[t]
	}
	return "unknown"
}

// MarkTypes lists every MarkType.
var MarkTypes = []MarkType{MarkFile, MarkDir, MarkMount, MarkFilesystem}

// DropStage names where an event was lost.
type DropStage string

const (
	DropReportQueue DropStage = "report_queue" // the engine's bounded queue to the sinks was full
	DropExport      DropStage = "export"       // a log sink lost it: its queue was full, or delivery failed
	DropKernel      DropStage = "kernel"       // the kernel queue overflowed (count unknown: one per overflow)
)

// OverflowSource names the kernel interface whose queue overflowed.
type OverflowSource string

const (
	OverflowFanotify OverflowSource = "fanotify"
	OverflowInotify  OverflowSource = "inotify"
)

// StandinReader names a reader started for a stuck permission loop.
type StandinReader string

const (
	ReaderStandin    StandinReader = "standin"     // decides with the policy
	ReaderLastResort StandinReader = "last_resort" // answers with the default, every stand-in being stuck
)

// GroupState is the per-group part of the snapshot: the host or one
// container.
type GroupState struct {
	Name           string // "host" or the container name or short id
	ContainerID    string
	Marks          map[MarkType]int
	InotifyWatches int
}

// ProfileGroups is how many groups (the host, containers) one profile
// covers.
type ProfileGroups struct {
	Profile string
	Groups  int
}

// State is a snapshot of the engine, the successor of the seed's
// FmonProbeData. It is read at scrape time.
type State struct {
	Groups []GroupState
	// ProfileGroups counts the groups each profile in force covers, in
	// the configuration's order, every profile listed (at 0 too).
	ProfileGroups    []ProfileGroups
	PendingEvents    int // events waiting in the report queue
	Marks            map[MarkType]int
	Rules            int // allow rules in force (entries of allow lists of block filters)
	InotifyWatches   int
	InotifyLimit     int // fs.inotify.max_user_watches
	Overflows        map[OverflowSource]uint64
	Drops            map[DropStage]uint64
	DecisionTimeouts map[Answer]uint64        // permission events answered by the default (a decision stuck past the deadline, or failed), by the answer
	LateAnswers      uint64                   // permission events answered by the watchdog with the policy's verdict, decided but late
	StandinAnswers   uint64                   // permission events answered with the policy's verdict by a stand-in reader, while the loop was stuck
	StandinReaders   map[StandinReader]uint64 // readers started because the loop (and stand-ins) were stuck
	PermissionEvents uint64                   // permission events answered
	NotifyEvents     uint64                   // notification events read
	Ready            bool                     // every mark of the current configuration is placed
	Unmarked         int64                    // objects of the current configuration that could not be marked
	BudgetUnmarked   int64                    // objects of containers not marked because their budget was full
	// Unjudged counts, per block or report_access filter in force (every
	// one listed, at 0 too), the descriptors of covered files that the
	// last scan of /proc found held by processes the filter does not
	// allow, opened before the file was protected.
	Unjudged []FilterCount
	// WithoutPreContent counts, per block filter in force (every one
	// listed, at 0 too), the files of protect-mode block filters whose
	// marks lack pre-content events (tmpfs, overlayfs, kernels before
	// 6.14): only their reads are judged, through descriptors opened
	// after the mark or after arming.
	WithoutPreContent []FilterCount

	// ProcessTable is the state of the process table; nil when reports
	// read /proc instead.
	ProcessTable *ProcessTableState

	// Decisions is the histogram of permission decision durations, event
	// read to answer written.
	Decisions HistogramSnapshot

	// Baseline is the state of the baseline of watched files and of
	// hashing.
	Baseline BaselineState
}

// BaselineState is what the engine knows of watched files' facts.
type BaselineState struct {
	Files       int                  // watched files in the baseline, the host's and the containers'
	Hashed      uint64               // content hashes computed
	Skipped     map[HashState]uint64 // hashes skipped, by reason (every one listed)
	HashSeconds float64              // time spent hashing
}

// ProcessTableState is the process table's: what the kernel said of
// every process at exec, fork and exit.
type ProcessTableState struct {
	Records   int    // processes in the table, live and recently exited
	Size      int    // the most it holds (--process.table-size)
	Evictions uint64 // records dropped to make room, before their time
	Lost      uint64 // execs, forks and exits the kernel could not record (its ring buffer full)
}

// KnownSeries are the label sets of the event counters that the
// configuration in force makes known before any event: every profile's
// events of the kinds and operations its filters report, and the host's
// denied and violation counts of each block filter. The metrics export
// them at 0 from the start, so dashboards and rate() see a 0, not "No
// data", until the first event. Containers' label sets are not known
// ahead (a selector names no container) and appear with their first event.
type KnownSeries struct {
	Profiles []string       // every profile, in the configuration's order
	Events   []EventSeries  // fsmon_events_total
	Filters  []FilterSeries // fsmon_access_denied_total and fsmon_access_violations_total on the host
}

// EventSeries is one label set of the event counter.
type EventSeries struct {
	Kind    Kind
	Op      Op
	Profile string
}

// FilterSeries is one label set of the denied (Kind KindDenied) or
// violation (KindViolation) counter of a block filter on the host.
type FilterSeries struct {
	Kind            Kind
	Profile, Filter string
}
