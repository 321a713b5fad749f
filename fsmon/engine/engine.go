// Package engine is the monitor engine: it places fanotify marks and
// inotify watches for a compiled policy, answers permission events, and
// turns kernel events into fsmon.Events for the sinks.
//
// The engine wires parts that each own their state: internal/marks
// (the tables, the walks, the marks and their upkeep as the tree
// changes), internal/procinfo (the executable cache, the facts of
// processes) and internal/groups (the host and the containers). The
// engine's files depend on them and they never on the engine; marks
// uses groups, nothing else of the engine.
//
// Four kernel objects, each with one job:
//   - a pre-content-class fanotify group (content class before Linux
//     6.14) with an unlimited queue answers opens (FAN_OPEN_PERM) of files
//     that block filters or report_access cover, and the reads, writes,
//     mmaps and truncates (FAN_PRE_ACCESS, else FAN_ACCESS_PERM) of those
//     that protect-mode block filters cover (content.go);
//   - an arming group holds one ignore-only file system mark per file
//     system of such files, so that descriptors opened there before a
//     file's own mark are judged from the mark on; it gets no events
//     (arm.go, marks/guard.go);
//   - a notification fanotify group reporting directory fids and names
//     reports changes (write, attrib, create, delete, rename) with the pid
//     of the process that made them;
//   - inotify keeps the marks in step with the tree: new files and
//     directories get marks, directories that go lose theirs
//     (marks.TreeEvent).
//
// Protection belongs to the file: an inode mark on every covered file
// (hard links and renames keep it), and a mark on the directory for its
// children, so a file created or renamed into place later is covered from
// its first open.
//
// The hot path, one open of a marked file, in order:
//
//	permLoop       read(2) a batch of permission events (respond.go)
//	handlePerm     the daemon's own opens: allow at once
//	decide         fstat the event fd; the rules of the inode
//	               (fileRules: marks.FileRules, one map look-up under the
//	               tables' read lock), or of its name in a marked
//	               directory (dirRules: marks.DirRules, by the fd's path
//	               and mount id)
//	policy.Judge   per rule: mode, behaviour, allow list; asks for facts
//	learnFacts     the facts it asks for: the executable's identity
//	               (exeID, from the executable cache: one load), the
//	               allow entries' identities (allowIDs), the names
//	               (exeNames); policy.Outcome keeps the most severe
//	               (phase 1 ends: the slot stores the verdict)
//	adopt          before the answer, a file covered by its name only
//	               gets marks of its own (marks.Adopt; never waits for a
//	               walk: only the tables' lock)
//	gather         only for reported events, while the opener waits:
//	               the process's facts, its group (groupOf), the path
//	               (phase 2: reads that may block)
//	answer         write the verdict, unless the watchdog has
//	enqueue        the event, to the sinks, after the answer
//
// The watchdog answers a batch whose decision misses the deadline: with
// the slot's verdict when phase 1 is done, else with the default, which
// is reported as a timeout event; a stand-in reader answers what queues
// behind it.
//
// Descriptors opened before a file system was armed are never judged by
// the kernel: after every placement a scan of /proc finds and reports
// those that outsiders hold (early.go).
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/allowstate"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/groups"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/learnstate"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/marks"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/procinfo"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/container"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/inotify"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/statefile"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// DefaultAnswer is what a permission event gets when its decision misses
// the deadline.
type DefaultAnswer uint8

const (
	// FailOpen allows the access: a slow daemon never stops the machine.
	FailOpen DefaultAnswer = iota
	// FailClosed denies it.
	FailClosed
)

// ExeCache says how allow lists learn what a process runs.
type ExeCache uint8

const (
	// ExeCacheOn caches it per process; an exec, exit or rename, counted
	// in the kernel, makes the entry stale (off by itself where the BPF
	// counter cannot be loaded).
	ExeCacheOn ExeCache = iota
	// ExeCacheOff reads /proc/PID/exe at every decision.
	ExeCacheOff
)

// ProcessTable says where reports learn who made a change.
type ProcessTable uint8

const (
	// ProcessTableOn keeps a table of every process fed by the kernel at
	// exec, fork and exit (BPF programs), so that a change is named by
	// its process after that process has exited; where the programs
	// cannot be loaded, reports read /proc (and the log says so).
	ProcessTableOn ProcessTable = iota
	// ProcessTableOff reads /proc when the event is read: a process
	// gone by then is reported by its pid only.
	ProcessTableOff
)

// Options configure an Engine.
type Options struct {
	Logger *slog.Logger
	// ProcRoot is the proc file system, normally /proc.
	ProcRoot string
	// DecisionTimeout is the deadline of one permission decision, from
	// the event being read to the answer being written.
	DecisionTimeout time.Duration
	// Default answers decisions past the deadline.
	Default DefaultAnswer
	// QueueSize bounds the queue of events waiting for the sinks.
	QueueSize int
	// Sink receives every event.
	Sink fsmon.Sink
	// ContainerScan is how often /proc is scanned for new and gone
	// containers; 0 watches the host only.
	ContainerScan time.Duration
	// MaxObjects bounds the directories and files the engine tracks, so
	// that a tree a container fills with millions of entries costs
	// bounded memory; past it, what is left is not marked and counted.
	MaxObjects int
	// GroupBudget bounds the directories and files of each container,
	// block filters' too (marks.Options.GroupBudget); 0: none.
	GroupBudget int
	// ExeCache chooses how allow lists learn what a process runs.
	ExeCache ExeCache
	// Priority is how the permission loop and the watchdog are
	// scheduled.
	Priority Priority
	// StateDir, when set, is where what allow entries resolved to is
	// kept across restarts (allowstate): the previous build of an
	// upgraded program stays allowed after a restart too.
	StateDir string
	// LearnStateFile, when set, is where the learned set is kept across
	// restarts (learnstate); empty keeps it in memory only.
	LearnStateFile string
	// Arming says whether file systems that hold protected files are
	// armed (docs/design/deny.md §2).
	Arming Arming
	// CRISockets are the CRI API sockets of Kubernetes runtimes
	// (containerd, CRI-O) that name pods' containers, as paths on the
	// host (read below the host's root); nil asks none.
	CRISockets []string
	// ProcessTable chooses where reports learn who made a change;
	// ProcessTableSize bounds its records (default 16384) and
	// ExitedRetention is how long it keeps those of exited processes
	// (default 30s).
	ProcessTable     ProcessTable
	ProcessTableSize int
	ExitedRetention  time.Duration
	// Hashing turns the content hashes of change events on or off;
	// HashMaxSize (default 16 MiB) is the largest file hashed, HashRate
	// (default 10) the hashes a second of each filter's changes
	// (facts.go). The baseline of the host's watched files is kept in
	// StateDir.
	Hashing     Hashing
	HashMaxSize int64
	HashRate    float64

	// PassAge is how long a file beside a protected one (in a directory
	// marked for it, covered by no filter that asks about opens) must be
	// left unchanged, by its ctime, before its opens are let past the
	// daemon (docs/design/deny.md §9); 0 is marks.DefaultPassAge (5s),
	// negative never.
	PassAge time.Duration
}

// Arming says whether the engine arms the file systems of protected
// files: a file system mark of its own group, with no events, that makes
// every descriptor opened on it afterwards judged at its reads and
// writes by the inode marks present at that moment. Without it a
// descriptor opened before a file's own mark (a new file's first
// instants, the walk's window) is never judged. The cost is about
// 0.25 µs per read or write of any file on an armed file system.
type Arming uint8

const (
	// ArmFilesystems arms every file system that holds files of
	// protect-mode block filters, before the walk that marks them.
	ArmFilesystems Arming = iota
	// ArmOff arms nothing.
	ArmOff
)

// The marks package's types under the names the decision reads them by.
// devIno and realKey are types of their own, not aliases, so that the
// decision's literals of them stay short (vet wants the fields of other
// packages' structs named).
type (
	devIno   marks.DevIno
	realKey  marks.RealKey
	grule    = marks.Rule
	dirEntry = marks.Dir
)

// Engine is the monitor engine. New makes the kernel objects; Run reads
// events until its context ends; Apply places a policy's marks.
type Engine struct {
	log     *slog.Logger
	opts    Options
	proc    proc.FS
	selfPID int32

	perm  *fanotify.Group
	notif *fanotify.Group
	// arm holds the arming marks (nil: Arming is ArmOff); it never
	// gets an event, and its reader allows whatever it reads.
	arm       *fanotify.Group
	armEvents atomic.Uint64 // events the arming group got: each one a bug
	ino       *inotify.Instance
	// wake and stopping end the blocking permission loop.
	wake     *waker
	stopping atomic.Bool
	// standins stand in for a stuck permission loop (the watchdog
	// starts them); lastResortOn is set while the last-resort reader
	// runs. readers counts those alive; each sends on readerExit as it
	// ends.
	standins     [maxStandins]standin
	lastResortOn atomic.Bool
	readers      atomic.Int32
	readerExit   chan struct{}
	// handoff holds the events the watchdog took from a stuck reader
	// before their decision began; the next reader to finish a batch
	// decides them.
	handoff chan handed

	// marks places the marks, keeps their tables and the tree in step,
	// with its own locks: the tables' lock, and the placement lock that
	// Apply, the inotify loop and container discovery take.
	marks *marks.Marks
	// mu guards the policy, the groups and their rules.
	mu     sync.RWMutex
	policy *policy.Policy
	// host is the host's group; groups maps mount namespaces to groups,
	// the host's included.
	host   *group
	groups map[uint64]*group
	// unmonitored are the namespaces of containers that no profile
	// covers, when they were passed over; mu guards it.
	unmonitored    map[uint64]time.Time
	hostNS, selfNS uint64
	// discoverNow asks the discovery of containers for a scan at once
	// (execSeen); one slot, so that requests merge.
	discoverNow chan struct{}
	// coverage is how many groups each profile covered when last
	// logged (noteCoverage).
	coverageMu sync.Mutex
	coverage   map[string]int
	finder     *groups.Finder // makes container groups
	cfs        container.FS

	// containers is set while any container group exists: until then a
	// decision need not ask which namespace the process is in.
	containers atomic.Bool
	batch      *permBatch // the permission loop's current batch, shared with the watchdog

	queue chan fsmon.Event

	decisions    fsmon.Histogram
	permEvents   atomic.Uint64
	notifyEvents atomic.Uint64
	timeouts     [3]atomic.Uint64 // default answers, by fsmon.Answer
	lateAnswers  atomic.Uint64    // the policy's verdicts the watchdog wrote
	// standinAnswers are the policy's answers given by stand-ins;
	// standinsStarted and lastResorts count the readers started.
	standinAnswers  atomic.Uint64
	standinsStarted atomic.Uint64
	lastResorts     atomic.Uint64
	overflowFan     atomic.Uint64
	overflowIno     atomic.Uint64
	dropQueue       atomic.Uint64
	dropKernel      atomic.Uint64
	inotifyLimit    int
	who             *procinfo.Reader // what the loops know of processes
	recent          procinfo.Recent  // the notification loop's own, lock-free
	readErrors      atomic.Uint64
	allowIDs        allowIDs           // the permission loop's own
	content         contentCache       // the permission loop's own (content.go)
	contentHits     atomic.Uint64      // content events answered from it, for tests
	filesGone       atomic.Uint64      // marked files gone for good (content.go's contentGen)
	exes            *procinfo.ExeCache // who's
	procs           *procinfo.Table    // nil: reports read /proc
	users           procinfo.Users     // user names, by group
	groupNames      procinfo.GroupNames
	facts           *factsWorker  // the facts of changed files and their baseline (facts.go)
	recentRec       recentRecords // the notification loop's own
	lastExec        execKey       // the permission loop's own
	allowGen        atomic.Uint64
	// allowSeeds is what the host's allow entries resolved to when the
	// daemon last ran (read-only after New); allowStore writes the
	// loop's records back.
	allowSeeds map[string][]resolution
	allowStore *allowstate.Writer
	// learned is the learned set, fed by the report goroutine;
	// learnStore writes it to Options.LearnStateFile (nil: not kept).
	learned    *learnstate.Set
	learnStore *statefile.Poller
	running    atomic.Bool
	early      earlyScan // descriptors opened before protection (early.go)

	// slowDecision, when set by a test, runs inside phase 1 of every
	// decision: the stand-in for a /proc read that hangs. slowReport runs
	// inside phase 2 (the report's facts) of every reported decision.
	slowDecision atomic.Pointer[func()]
	slowReport   atomic.Pointer[func()]
	// holdNotify, when set by a test, runs before the notification loop
	// handles a batch it has read: the stand-in for a loop that reads
	// changes after their writers have exited.
	holdNotify atomic.Pointer[func()]
	// syncWait is how long a change waits for the process table
	// (syncWait, unless a test changes it).
	syncWait atomic.Int64
}

// Learned is what learn mode saw of one executable on one filter of a
// profile: the files, how often, when, the users and containers.
type Learned = learnstate.Entry

// LearnedFileName is the learned set's file in the state directory when
// no other is named.
const LearnedFileName = learnstate.FileName

// ErrNotRoot says the process lacks the privilege fanotify needs.
var ErrNotRoot = errors.New("fanotify permission events need root (CAP_SYS_ADMIN)")

// New makes the fanotify groups and the inotify instance.
func New(opts Options) (*Engine, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ProcRoot == "" {
		opts.ProcRoot = "/proc"
	}
	if opts.DecisionTimeout <= 0 {
		opts.DecisionTimeout = 250 * time.Millisecond
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 8192
	}
	if opts.MaxObjects <= 0 {
		opts.MaxObjects = 1 << 20
	}
	if opts.Sink == nil {
		opts.Sink = fsmon.SinkFunc(func(*fsmon.Event) {})
	}
	e := &Engine{
		log:          opts.Logger,
		opts:         opts,
		proc:         proc.FS{Root: opts.ProcRoot},
		selfPID:      int32(os.Getpid()),
		batch:        &permBatch{},
		readerExit:   make(chan struct{}, maxStandins+1),
		handoff:      make(chan handed, 4096),
		groups:       map[uint64]*group{},
		unmonitored:  map[uint64]time.Time{},
		discoverNow:  make(chan struct{}, 1),
		cfs:          container.FS{Root: opts.ProcRoot},
		queue:        make(chan fsmon.Event, opts.QueueSize),
		inotifyLimit: inotify.WatchLimit(),
		early:        newEarlyScan(),
	}
	var err error
	if e.host, err = groups.NewHost(opts.ProcRoot); err != nil {
		return nil, err
	}
	e.hostNS = e.host.NS
	e.finder = &groups.Finder{ProcRoot: opts.ProcRoot, Proc: e.proc, CFS: e.cfs, Host: e.host, Meta: runtimeSources(opts),
		Inits: &container.Inits{Root: groups.HostFiles(opts.ProcRoot)}}
	e.groups[e.hostNS] = e.host
	e.selfNS, _ = e.cfs.MountNS(e.selfPID)
	// The permission group is read by a blocking read(2) on a thread of
	// its own: between an open and its answer there are then only the
	// syscalls a minimal C responder makes, where a netpoller wakeup or a
	// poll(2) would add to every open.
	//
	// Pre-content class where the kernel has it (Linux 6.14): it answers
	// opens as the content class does, and FAN_PRE_ACCESS, the event
	// before each read, write, mmap and truncate of a protected file.
	e.perm, err = fanotify.NewPermission(fanotify.QueueUnlimited, fanotify.ReadsBlocking)
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("%w: %w", ErrNotRoot, err)
		}
		return nil, fmt.Errorf("permission group: %w", err)
	}
	if e.perm.Class() != fanotify.ClassPreContent {
		e.log.Warn("the kernel has no pre-content fanotify events (Linux before 6.14): reads of protected files through descriptors opened after their mark are judged (FAN_ACCESS_PERM), but writes, mmap and truncate through descriptors taken from allowed processes are not")
	}
	if opts.Arming == ArmFilesystems {
		// A group of its own: in the deciding group the arming mark's
		// ignore mask would mute the inode marks (deny.md §0). Polled:
		// it is never expected to have anything to read.
		if e.arm, err = fanotify.NewPermission(fanotify.QueueUnlimited, fanotify.ReadsPolled); err != nil {
			e.perm.Close()
			return nil, fmt.Errorf("arming group: %w", err)
		}
	}
	// Unlimited as well: the kernel counts one overflow for any number of
	// lost events, so losses are left to the report queue, where each is
	// counted. The notification loop reads faster than writers write.
	e.notif, err = fanotify.New(fanotify.ClassNotif, fanotify.ReportFIDName, fanotify.QueueUnlimited, fanotify.ReadsPolled)
	if err != nil {
		e.perm.Close()
		e.closeArm()
		return nil, fmt.Errorf("notification group (needs FAN_REPORT_DFID_NAME, Linux 5.9): %w", err)
	}
	e.ino, err = inotify.New()
	if err != nil {
		e.perm.Close()
		e.closeArm()
		e.notif.Close()
		return nil, err
	}
	if e.wake, err = newWaker(e.perm); err != nil {
		e.perm.Close()
		e.closeArm()
		e.notif.Close()
		e.ino.Close()
		return nil, err
	}
	e.marks = marks.New(marks.Options{Logger: e.log, Perm: e.perm, Notif: e.notif, Ino: e.ino, Arm: e.arm, MaxObjects: opts.MaxObjects, GroupBudget: opts.GroupBudget, PassAge: opts.PassAge})
	mode := procinfo.CacheOn
	if opts.ExeCache == ExeCacheOff {
		mode = procinfo.CacheOff
	}
	e.exes = procinfo.NewExeCache(e.log, mode, e.proc, 1024)
	e.who = procinfo.NewReader(e.proc, e.exes)
	if opts.StateDir != "" {
		e.loadAllowState(opts.StateDir)
	}
	e.loadLearned(opts.LearnStateFile)
	e.procs = newProcessTable(e.log, e.proc, opts, e.execSeen)
	e.syncWait.Store(int64(syncWait))
	e.facts = newFactsWorker(e)
	return e, nil
}

// loadAllowState reads what the host's allow entries resolved to when
// the daemon last ran. A file that cannot be read is set aside, not
// lost, and the daemon starts without it: it then knows only the
// programs the entries name now.
func (e *Engine) loadAllowState(dir string) {
	st, err := allowstate.Load(dir)
	if err != nil {
		bad, aerr := allowstate.SetAside(dir)
		if aerr != nil {
			e.log.Error("allow list state unreadable; running processes of programs upgraded while the daemon was down are allowed only if the entry names them now", "err", err, "set_aside", aerr)
		} else {
			e.log.Error("allow list state unreadable, kept as "+bad+"; running processes of programs upgraded while the daemon was down are allowed only if the entry names them now", "err", err)
		}
	}
	e.allowSeeds = make(map[string][]resolution, len(st))
	for p, rs := range st {
		for _, r := range rs {
			e.allowSeeds[p] = append(e.allowSeeds[p], resolution{id: devIno{r.Dev, r.Ino}, handle: r.Handle})
		}
	}
	e.allowStore = allowstate.NewWriter(dir, func(err error) {
		e.log.Error("writing the allow list state", "err", err)
	})
	e.allowIDs.store = e.allowStore
	e.log.Debug("allow list state loaded", "dir", dir, "entries", len(st))
}

// learnWriteInterval bounds how often the learned set's file is
// written: a set that changes at every learned event costs one write
// per interval, and a crash loses at most that much.
const learnWriteInterval = time.Second

// loadLearned reads the learned set kept in file (none: an empty set).
// A file that cannot be read is set aside, not lost, and the daemon
// learns afresh: the error names the file and says what is wrong.
func (e *Engine) loadLearned(file string) {
	if file == "" {
		e.learned = learnstate.NewSet(nil)
		return
	}
	es, err := learnstate.Load(file)
	if err != nil {
		bad, aerr := statefile.SetAside(filepath.Dir(file), filepath.Base(file))
		if aerr != nil {
			e.log.Error("learned set unreadable, and it could not be set aside; learning afresh, and the file will be overwritten", "file", file, "err", err, "set_aside", aerr)
		} else {
			e.log.Error("learned set unreadable, kept as "+bad+"; learning afresh", "file", file, "err", err, "kept_as", bad)
		}
		es = nil
	}
	e.learned = learnstate.NewSet(es)
	e.learnStore = statefile.NewPoller(filepath.Dir(file), filepath.Base(file), learnWriteInterval, e.learned.EncodeChanged, func(err error) {
		e.log.Error("writing the learned set", "file", file, "err", err)
	})
	e.log.Debug("learned set loaded", "file", file, "entries", len(es))
}

// liveGroups is the set of groups that exist now, the host's included.
func (e *Engine) liveGroups() map[*group]struct{} {
	e.mu.RLock()
	defer e.mu.RUnlock()
	live := make(map[*group]struct{}, len(e.groups)+1)
	live[e.host] = struct{}{}
	for _, g := range e.groups {
		live[g] = struct{}{}
	}
	return live
}

// Run reads and answers events until ctx ends. When it returns, every
// permission event it read has been answered, the kernel objects are
// closed (the kernel allows whatever was still queued) and every queued
// event has been handed to the sink.
func (e *Engine) Run(ctx context.Context) error {
	if !e.running.CompareAndSwap(false, true) {
		return errors.New("engine: Run called twice")
	}
	var loops sync.WaitGroup
	dispatched := make(chan struct{})
	go func() {
		defer close(dispatched)
		e.dispatch()
	}()
	errc := make(chan error, 4)
	// changeLoops read changes; they stop before the permission loop
	// (below).
	var changeLoops sync.WaitGroup
	loops.Add(1)
	changeLoops.Add(2)
	go func() { defer loops.Done(); errc <- e.permLoop() }()
	go func() { defer changeLoops.Done(); errc <- e.notifyLoop() }()
	go func() { defer changeLoops.Done(); errc <- e.inotifyLoop() }()
	if e.arm != nil {
		loops.Add(1)
		go func() { defer loops.Done(); errc <- e.armLoop() }()
	}
	wdDone := make(chan struct{})
	wdExited := make(chan struct{})
	go func() { defer close(wdExited); e.watchdog(wdDone) }()
	discoverCtx, stopDiscover := context.WithCancel(ctx)
	discovered := make(chan struct{})
	go func() { defer close(discovered); e.discover(discoverCtx) }()
	go e.logLosses(discoverCtx)
	go e.exes.Watch(discoverCtx)
	tableDone := make(chan struct{})
	go func() {
		defer close(tableDone)
		if e.procs != nil {
			e.procs.Run()
		}
	}()
	scanned := make(chan struct{})
	go func() { defer close(scanned); e.scanLoop(discoverCtx) }()
	go e.facts.run()
	stopLearn, learnSaved := make(chan struct{}), make(chan struct{})
	if e.learnStore != nil {
		go func() { defer close(learnSaved); e.learnStore.Run(stopLearn) }()
	} else {
		close(learnSaved)
	}
	stopSave, saved := make(chan struct{}), make(chan struct{})
	if e.allowStore != nil {
		go func() { defer close(saved); e.allowStore.Run(stopSave) }()
	} else {
		close(saved)
	}

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		e.log.Error("event loop failed", "err", err)
	}
	stopDiscover()
	<-discovered
	e.stopScans(scanned)
	// The change loops first, each reading what is queued, then the facts
	// worker: it completes those changes, and the permission loop, still
	// running, answers its own opens of protected files (hashing). With
	// the loop stopped first, such an open would wait for the group's
	// close, which waits for the worker.
	now := time.Now()
	e.notif.File().SetReadDeadline(now)
	e.ino.File().SetReadDeadline(now)
	changeLoops.Wait()
	// The changes read are reported, the baseline written.
	e.facts.stop()
	<-e.facts.done
	// Wake every other loop; each reads what is queued, answers it and
	// stops.
	e.stopping.Store(true)
	if err := e.perm.SetNonblock(); err != nil {
		e.log.Error("stopping the permission loop", "err", err)
	}
	// In a goroutine of its own: the open waits for its answer, which the
	// loop gives, or, if the loop has already drained and stopped, the
	// kernel when the group is closed below.
	go e.wake.wake()
	if e.arm != nil {
		e.arm.File().SetReadDeadline(time.Now())
	}
	loops.Wait()
	close(wdDone)
	<-wdExited
	// The loop has stopped: its last records are written.
	close(stopSave)
	<-saved
	for e.readers.Load() > 0 {
		// A stand-in may sit in read(2): one more wake event ends it
		// (the fd is non-blocking now, so its next read returns).
		go e.wake.wake()
		<-e.readerExit
	}
	// Handed events no reader took (the loop and the stand-ins have
	// stopped).
	for done := false; !done; {
		select {
		case h := <-e.handoff:
			e.answerDefault(h, e.defaultVerdict())
		default:
			done = true
		}
	}
	e.perm.Close()
	e.closeArm()
	e.notif.Close()
	e.ino.Close()
	e.wake.close()
	e.exes.Close()
	if e.procs != nil {
		e.procs.Close()
	}
	<-tableDone
	e.marks.Close()
	close(e.queue)
	<-dispatched
	// The report goroutine has seen the last learned event.
	close(stopLearn)
	<-learnSaved
	return err
}

// ApplyResult says what placing a policy did.
type ApplyResult struct {
	Groups      int
	Dirs, Files int
	Errors      int   // objects that could not be marked
	FirstError  error // the first of them
	// Incomplete: the object or inotify watch limit was reached; the
	// engine does not report itself ready.
	Incomplete bool
	Took       time.Duration
}

// ErrPartial says a policy is in force, but only partly: some objects
// could not be marked (ApplyResult says how many, and why the first).
var ErrPartial = errors.New("the configuration is only partly in force")

// ErrTooMany says the engine tracks as many objects as it may.
var ErrTooMany = marks.ErrTooMany

// Apply places the marks of p in every group and makes it the policy in
// force. The old policy's marks stay until the new ones are placed, so
// nothing covered by both is ever uncovered. When some objects could not
// be marked, p is in force all the same and the error wraps ErrPartial
// and the first cause.
func (e *Engine) Apply(p *policy.Policy) (ApplyResult, error) {
	pl := e.marks.Place()
	defer pl.Done()
	start := time.Now()
	t := pl.Begin()
	res := ApplyResult{}
	for _, g := range e.groupList() {
		rules := p.RulesFor(g.Target())
		w := pl.Walk(t, g, rules)
		res.Errors += w.Errors
		if res.FirstError == nil {
			res.FirstError = w.First
		}
		res.Incomplete = res.Incomplete || w.Incomplete
		e.mu.Lock()
		g.Rules = rules
		e.mu.Unlock()
		e.checkAllowPaths(g, rules)
		if len(rules) > 0 || g.IsHost() {
			res.Groups++
		}
	}
	old := pl.Swap(t)
	e.mu.Lock()
	e.policy = p
	e.mu.Unlock()
	for _, g := range e.groupList() {
		e.facts.sync(g)
	}
	e.retainLearned(p)
	res.Dirs, res.Files = t.Len()
	// Namespaces no profile covered may be covered now.
	clear(e.unmonitored)
	e.allowGen.Add(1)
	pl.Retire(old)
	e.noteCoverage()
	// Descriptors of the files now covered that were opened before.
	e.requestScan()
	res.Took = time.Since(start)
	if res.Errors > 0 {
		return res, fmt.Errorf("%w: %d objects not marked, the first: %w", ErrPartial, res.Errors, res.FirstError)
	}
	return res, nil
}

// groupList returns the groups, the host's included.
func (e *Engine) groupList() []*group {
	e.mu.RLock()
	defer e.mu.RUnlock()
	groups := make([]*group, 0, len(e.groups))
	for _, g := range e.groups {
		groups = append(groups, g)
	}
	return groups
}

// checkAllowPaths warns of allow entries that name no file in the
// group's root: a typo (/usr/sbin/ngnix) would deny the real program
// without a hint.
func (e *Engine) checkAllowPaths(g *group, rules []*policy.Rule) {
	for _, r := range rules {
		if !r.Blocks() {
			continue
		}
		for _, p := range r.AllowExePaths() {
			if e.resolveID(g, p) == (devIno{}) {
				e.log.Warn("allow entry names no file: it allows nobody", "entry", p, "filter", r.Name, "profile", r.Profile.Name, "group", g.Name)
			}
		}
	}
}

// inotifyLoop hands inotify's events to the marks, which keep the tables
// in step with the tree.
func (e *Engine) inotifyLoop() error {
	buf := make([]byte, 64<<10)
	return e.readLoop("inotify", e.ino.File(), e.ino.Read, buf, func(b []byte) {
		overflow := false
		perr := inotify.Parse(b, func(ev *inotify.Event) {
			if ev.Mask.Has(inotify.QOverflow) {
				overflow = true
				return
			}
			e.marks.TreeEvent(ev)
		})
		if perr != nil {
			e.log.Warn("malformed inotify batch", "err", perr)
		}
		if overflow {
			// Some creations were missed: walk again, which adds what is
			// missing and keeps what is there.
			e.overflowIno.Add(1)
			e.log.Warn("inotify queue overflowed; walking the tree again (raise fs.inotify.max_queued_events)")
			e.rewalk()
		}
	})
}

// rewalk places the current policy again, in every group.
func (e *Engine) rewalk() {
	p := e.marks.Place()
	defer p.Done()
	p.Rewalk(e.groupList())
	// Files marked only now were open to anyone since their creation.
	e.requestScan()
}

// logLosses says in the log, at most every 10 seconds, how many events
// were lost since it last did: visible, but never a flood of lines.
func (e *Engine) logLosses(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	var queue, kernel, ino, readErr uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		e.marks.SweepGone(time.Now())
		q, k, i := e.dropQueue.Load(), e.overflowFan.Load(), e.overflowIno.Load()
		if q != queue {
			e.log.Warn("events dropped: the report queue was full (raise --events.queue-size, or check the sinks)", "dropped", q-queue)
		}
		if k != kernel {
			e.log.Warn("fanotify queue overflowed: change events were lost (raise fs.fanotify.max_queued_events)", "overflows", k-kernel)
		}
		if i != ino {
			e.log.Warn("inotify queue overflowed: the tree was walked again (raise fs.inotify.max_queued_events)", "overflows", i-ino)
		}
		if r := e.readErrors.Load(); r != readErr {
			e.log.Warn("reading kernel events failed for want of fds or memory (raise the fd limit)", "failures", r-readErr)
			readErr = r
		}
		queue, kernel, ino = q, k, i
	}
}

// Ready reports whether every mark of the current policy is placed.
func (e *Engine) Ready() bool { return e.marks.Ready() }

// LearnedSet returns what learn mode saw, sorted by profile, filter
// and executable, for turning into allow lists (policy.WithLearned).
func (e *Engine) LearnedSet() []Learned { return e.learned.Entries() }

// LearnedDropped is how many executables the learned set had no room
// for (learnstate.MaxEntries).
func (e *Engine) LearnedDropped() uint64 { return e.learned.Dropped() }

// Policy is the policy in force (nil before the first Apply).
func (e *Engine) Policy() *policy.Policy {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.policy
}

// retainLearned drops what was learned on the profiles and filters p no
// longer has: a reload that removes a filter removes what it learned.
func (e *Engine) retainLearned(p *policy.Policy) {
	have := make(map[[2]string]bool, len(p.Rules))
	for _, r := range p.Rules {
		have[[2]string{r.Profile.Name, r.Name}] = true
	}
	if n := e.learned.Retain(func(profile, filter string) bool { return have[[2]string{profile, filter}] }); n > 0 {
		e.log.Info("learned entries dropped: their filters are no longer in the configuration", "entries", n)
		if e.learnStore != nil {
			e.learnStore.Changed()
		}
	}
}

// Snapshot returns the state of the engine.
func (e *Engine) Snapshot() fsmon.State {
	counts := e.marks.Counts()
	// The arming group's marks, one per file system.
	counts.Total[fsmon.MarkFilesystem] += e.marks.Armed()
	e.mu.RLock()
	rules := 0
	for _, g := range e.groups {
		for _, r := range g.Rules {
			if r.Blocks() {
				rules += r.AllowEntries()
			}
		}
	}
	profileGroups := e.profileGroups()
	var states []fsmon.GroupState
	for _, g := range e.groups {
		if g.IsHost() || len(g.Rules) > 0 {
			gs := counts.Group(g)
			gs.Name, gs.ContainerID = g.Name, g.ContainerID
			states = append(states, gs)
		}
	}
	e.mu.RUnlock()
	sort.Slice(states, func(i, j int) bool {
		if (states[i].ContainerID == "") != (states[j].ContainerID == "") {
			return states[i].ContainerID == ""
		}
		return states[i].Name < states[j].Name
	})
	return fsmon.State{
		Groups:         states,
		ProfileGroups:  profileGroups,
		PendingEvents:  len(e.queue),
		Marks:          counts.Total,
		Rules:          rules,
		InotifyWatches: counts.Watches,
		InotifyLimit:   e.inotifyLimit,
		Overflows: map[fsmon.OverflowSource]uint64{
			fsmon.OverflowFanotify: e.overflowFan.Load(),
			fsmon.OverflowInotify:  e.overflowIno.Load(),
		},
		Drops: map[fsmon.DropStage]uint64{
			fsmon.DropReportQueue: e.dropQueue.Load(),
			fsmon.DropKernel:      e.dropKernel.Load(),
		},
		DecisionTimeouts: map[fsmon.Answer]uint64{
			fsmon.AnswerAllow: e.timeouts[fsmon.AnswerAllow].Load(),
			fsmon.AnswerDeny:  e.timeouts[fsmon.AnswerDeny].Load(),
		},
		LateAnswers:    e.lateAnswers.Load(),
		StandinAnswers: e.standinAnswers.Load(),
		StandinReaders: map[fsmon.StandinReader]uint64{
			fsmon.ReaderStandin:    e.standinsStarted.Load(),
			fsmon.ReaderLastResort: e.lastResorts.Load(),
		},
		PermissionEvents:  e.permEvents.Load(),
		NotifyEvents:      e.notifyEvents.Load(),
		Ready:             e.marks.Ready(),
		Unmarked:          e.marks.Unmarked(),
		BudgetUnmarked:    e.marks.BudgetCut(),
		Unjudged:          e.unjudged(),
		WithoutPreContent: e.withoutPreContent(),
		Baseline:          e.facts.state(),
		ProcessTable:      e.processTableState(),
		Decisions:         e.decisions.Snapshot(),
	}
}

// transient reports read errors that pass: the kernel could not open
// an event's fd (EMFILE, ENFILE) or allocate (ENOMEM).
func transient(err error) bool {
	return errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EINTR)
}

// readLoop reads batches from f until the engine stops, handing each to
// handle. The goroutine parks in the netpoller between batches. Stopping
// sets a read deadline; what is queued by then is still read, so that
// permission events get a real answer.
func (e *Engine) readLoop(what string, f *os.File, read func([]byte) (int, error), buf []byte, handle func([]byte)) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("%s events: %w", what, err)
	}
	var n int
	var rerr error
	readFn := func(uintptr) bool {
		n, rerr = read(buf)
		return !errors.Is(rerr, unix.EAGAIN)
	}
	for {
		if err := rc.Read(readFn); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				for {
					n, rerr = read(buf)
					if rerr != nil || n <= 0 {
						return nil
					}
					handle(buf[:n])
				}
			}
			return fmt.Errorf("waiting for %s events: %w", what, err)
		}
		if rerr != nil {
			if transient(rerr) {
				e.readErrors.Add(1)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("reading %s events: %w", what, rerr)
		}
		handle(buf[:n])
	}
}
