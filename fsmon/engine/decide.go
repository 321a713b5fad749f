package engine

import (
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/marks"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/procinfo"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// decision is the loop's scratch space, reused for every event so the
// permission path does not allocate for events it does not report.
// What one decision learns sits in facts, which the next decision resets
// with one assignment: nothing of one process's decision can carry into
// the next. The rest is scratch whose contents are only read through
// facts (the views point into the buffers).
type decision struct {
	facts
	rules  []grule   // the rules that cover the file; reused
	cached bool      // the batch holds the executable cache (ExeCache.Begin)
	allow  *allowIDs // the reader's own; nil: the loop's (e.allowIDs)
	// content is the reader's memory of content events; nil: the
	// loop's (e.content). ck names the content event being decided.
	content *contentCache
	ck      contentKey

	pathBuf [unix.PathMax]byte
	bufs    procinfo.Buffers // the opener's facts are read into these
}

// facts are what one decision has learnt so far.
type facts struct {
	rule    grule
	kind    fsmon.Kind
	group   *group    // the process's
	viaDir  *dirEntry // set when the file was covered by its directory's entry, not its own
	id      devIno    // the file's
	st      unix.Stat_t
	path    string
	proc    fsmon.Process
	subject policy.Subject // what the rules asked of the opener

	who      procinfo.Opener // what is known of the process that opened
	real     string          // view of pathBuf
	haveReal bool

	// seq is the placement sequence read before the look-ups; pass says
	// the file is a neighbour of protected files that no rule asks
	// about, whose later opens can go past the daemon (marks.Pass).
	seq  uint64
	pass bool
}

// reset starts a decision of an open by pid from zero.
func (d *decision) reset(pid int32) {
	d.facts = facts{who: procinfo.Opener{PID: pid, Cached: d.cached}}
	d.rules = d.rules[:0]
}

// verdict is the answer the decision gives.
func (d *decision) verdict() fanotify.Verdict {
	if d.kind == fsmon.KindDenied {
		return fanotify.Deny
	}
	return fanotify.Allow
}

// decide works out the verdict of one permission event and, when it is
// reported, the report's facts: judge and gather, the loop's two phases.
func (e *Engine) decide(s *permSlot, d *decision) {
	e.judge(s, d)
	if d.kind != 0 {
		e.gather(s, d)
	}
}

// judge is phase 1: the verdict of one permission event, from memory and
// reads that cannot block (fstat of the event fd, the tables, the
// executable cache or a stat of /proc/PID/exe, comm for name entries).
// The common cases (a file no rule covers, a process its allow list
// names) make a handful of syscalls and no allocation.
func (e *Engine) judge(s *permSlot, d *decision) {
	d.reset(s.pid)
	var st unix.Stat_t
	// Raw: fstat of an event fd does not block, and the runtime's syscall
	// bookkeeping is a measurable share of a decision.
	if _, _, errno := unix.RawSyscall(unix.SYS_FSTAT, uintptr(s.fd), uintptr(unsafe.Pointer(&st)), 0); errno != 0 {
		return
	}
	if f := e.slowDecision.Load(); f != nil {
		(*f)()
	}
	d.id = devIno{st.Dev, st.Ino}
	d.seq = e.marks.PlaceSeq()
	d.rules = e.fileRules(d.id, d.rules)
	if len(d.rules) == 0 {
		// Not a marked inode: a new file in a marked directory, known by
		// its name.
		real := e.fdPath(s.fd, d)
		i := strings.LastIndexByte(real, '/')
		if i < 0 {
			return
		}
		dir := real[:i]
		if dir == "" {
			dir = "/"
		}
		key := realKey{fsys.MountID(int(s.fd)), dir}
		if de := e.dirRules(key, real[i+1:], d); de != nil {
			d.viaDir, d.st = de, st
		}
		if len(d.rules) == 0 {
			d.pass = e.neighbour(key, real[i+1:], &st)
			return
		}
	}
	// The host's rules are the file's, whoever opens it: the protection
	// belongs to the file, also when a container reaches a host file
	// through a bind mount. A container's rules judge the container's
	// own processes only (ownRules): a container controls what its paths
	// lead to, and must not choose what others may open.
	// Whether any rule of the file asks about opens is read before
	// ownRules keeps the opener's: a pass is the file's, for every
	// opener, so a container's block rule must keep it from one even
	// when a host process's open is judged by the host's monitor rules.
	asked := wantsOpens(d.rules)
	if e.containers.Load() {
		if d.rules = e.ownRules(s.pid, d.rules); len(d.rules) == 0 {
			return
		}
	}
	a := d.allow
	if a == nil {
		a = &e.allowIDs
	}
	out := e.judgeRules(d.rules, d, a)
	if out.Kind == 0 {
		if !asked {
			// Only monitor filters cover it (their reports come from the
			// notification group): a neighbour too, if it sits in a
			// directory marked for a protected file.
			real := e.fdPath(s.fd, d)
			if i := strings.LastIndexByte(real, '/'); i >= 0 {
				dir := real[:i]
				if dir == "" {
					dir = "/"
				}
				d.pass = e.neighbour(realKey{fsys.MountID(int(s.fd)), dir}, real[i+1:], &st)
			}
		}
		return
	}
	d.kind, d.rule = out.Kind, d.rules[out.Rule]
}

// ownRules keeps of rules those that judge the opener pid, in place:
// every rule of the host's, and a container's rules only when pid is one
// of that container's processes (memberOf). Inside a container its root
// user owns every path, so its profile's paths can be made to lead
// anywhere it reaches: a symlink into a volume of host files, a bind
// mount. Were its rules the file's, the container would decide what
// host processes, or another container's, may open. The opener's group
// is read only when a container's rule is there to be kept or not.
func (e *Engine) ownRules(pid int32, rules []grule) []grule {
	var opener *group
	kept := rules[:0]
	for _, r := range rules {
		if r.Group != nil && !r.Group.IsHost() {
			if opener == nil {
				opener = e.groupOf(pid)
			}
			if opener != r.Group {
				continue
			}
		}
		kept = append(kept, r)
	}
	return kept
}

// neighbour reports whether the file called name in dir, fstat st,
// whose open no rule asks about, may get a pass (marks.Passable,
// marks.Neighbour; docs/design/deny.md §9).
func (e *Engine) neighbour(dir realKey, name string, st *unix.Stat_t) bool {
	return e.marks.Passable(st, time.Now()) && e.marks.Neighbour(marks.RealKey(dir), name)
}

func wantsOpens(rules []grule) bool {
	for _, r := range rules {
		if r.WantsOpens() {
			return true
		}
	}
	return false
}

// gather is phase 2, for reported events: what the report says of the
// opener and the file. The command line takes the opener's mmap_lock and
// can block; the verdict is stored by then, so a watchdog that finds this
// phase stuck writes the policy's verdict, not the default.
func (e *Engine) gather(s *permSlot, d *decision) {
	if f := e.slowReport.Load(); f != nil {
		(*f)()
	}
	d.group = e.host
	if e.containers.Load() {
		d.group = e.groupOf(s.pid)
	}
	// Reported: the opener waits for the answer, so its facts can still
	// be read; only reported events pay for this.
	d.proc = e.who.Report(&d.who, &d.bufs)
	d.proc.ExecutablePath = d.group.Inside(d.proc.ExecutablePath)
	e.completeProcess(d.group, &d.proc)
	d.path = strings.Clone(d.group.Inside(e.fdPath(s.fd, d)))
}

// fileRules appends the rules of the marked file id.
func (e *Engine) fileRules(id devIno, rules []grule) []grule {
	return e.marks.FileRules(marks.DevIno(id), rules)
}

// dirRules appends to d.rules the rules that cover name in the marked
// directory dir, and returns the directory when any does.
func (e *Engine) dirRules(dir realKey, name string, d *decision) *dirEntry {
	var de *dirEntry
	d.rules, de = e.marks.DirRules(marks.RealKey(dir), name, d.rules)
	return de
}

// adopt marks a file that was covered by its directory only, through
// the event's fd (marks.Adopt).
func (e *Engine) adopt(fd int32, d *decision) {
	name := d.real[strings.LastIndexByte(d.real, '/')+1:]
	e.marks.Adopt(int(fd), d.viaDir, name, &d.st)
}

// judgeRules judges the opener of d under each of rules, learning what
// the rules ask of it through a, the caller's own allow cache.
func (e *Engine) judgeRules(rules []grule, d *decision, a *allowIDs) policy.Outcome {
	var out policy.Outcome
	for i, r := range rules {
		d.subject.ExeAllowed = policy.Unknown // per rule: the lists differ
		for {
			k, need := policy.Judge(r.Rule, &d.subject)
			if need == 0 {
				out.Add(k, i)
				break
			}
			e.learnFacts(need, r, d, a)
		}
	}
	return out
}

// learnFacts gathers what policy.Judge asked for about the opener pid
// under rule r: whether its executable is one the rule's executable
// entries name (by identity: the inode that runs against the inodes the
// entries name in the rule's group's root), or its names (comm and the
// base name of its executable, which cost a read of /proc/PID/stat), or
// what its loader was told at exec (LD_PRELOAD and the like).
func (e *Engine) learnFacts(need policy.Need, r grule, d *decision, a *allowIDs) {
	if need&policy.NeedExe != 0 {
		id := devIno(e.who.ExeID(&d.who))
		d.subject.ExeAllowed = policy.FactOf(id != (devIno{}) && a.has(e, r.Group, r.AllowExePaths(), id, d))
	}
	if need&policy.NeedLoader != 0 {
		d.subject.Loader, d.subject.LoaderKnown = e.who.LoaderEnv(&d.who), true
	}
	if need&policy.NeedNames != 0 {
		d.subject.Comm, d.subject.ExeBase = e.who.Names(&d.who, &d.bufs)
		d.subject.NamesKnown = true
	}
}

// fdPath is the path of an event fd as the daemon's mount namespace sees
// it: for a container's file, the path inside the container's mounts. It
// is read once per decision, into d's buffer.
func (e *Engine) fdPath(fd int32, d *decision) string {
	if d.haveReal {
		return d.real
	}
	n, err := fsys.FDPath(int(fd), d.pathBuf[:])
	if err != nil {
		// The kernel cannot name it (ENAMETOOLONG beyond PATH_MAX): a
		// marked file is reported at the path its walk found it at.
		d.real = e.marks.FilePath(marks.DevIno(d.id))
		d.haveReal = d.real != ""
		return d.real
	}
	d.real, d.haveReal = proc.View(d.pathBuf[:n]), true
	return d.real
}

// pass lets the later opens of d's file past the daemon (marks.Pass).
func (e *Engine) pass(fd int32, d *decision) {
	e.marks.Pass(fd, marks.DevIno(d.id), d.seq)
}
