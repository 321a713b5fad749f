package engine

import (
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
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
		if de := e.dirRules(realKey{fsys.MountID(int(s.fd)), dir}, real[i+1:], d); de != nil {
			d.viaDir, d.st = de, st
		}
		if len(d.rules) == 0 {
			return
		}
	}
	// The rules are the file's, whoever opens it: the protection belongs
	// to the file, also when a container reaches a host file through a
	// bind mount. The opener's group only says how to name it, so it is
	// looked up for reported events only.
	var out policy.Outcome
	for i, r := range d.rules {
		d.subject.ExeAllowed = policy.Unknown // per rule: the lists differ
		for {
			k, need := policy.Judge(r.Rule, &d.subject)
			if need == 0 {
				out.Add(k, i)
				break
			}
			e.learnFacts(need, r, d)
		}
	}
	if out.Kind == 0 {
		return
	}
	d.kind, d.rule = out.Kind, d.rules[out.Rule]
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
	if d.kind == fsmon.KindLearned {
		e.learn(Learned{Profile: d.rule.Profile.Name, Filter: d.rule.Name, Executable: d.proc.ExecutablePath})
	}
	d.path = strings.Clone(d.group.Inside(e.fdPath(s.fd, d)))
}

// fileRules appends the rules of the marked file id.
func (e *Engine) fileRules(id devIno, rules []grule) []grule {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if f := e.tables.files[id]; f != nil {
		rules = append(rules, f.rules...)
	}
	return rules
}

// dirRules appends to d.rules the rules that cover name in the marked
// directory dir, and returns the directory when any does.
func (e *Engine) dirRules(dir realKey, name string, d *decision) *dirEntry {
	e.mu.RLock()
	defer e.mu.RUnlock()
	de := e.tables.dirsByReal[dir]
	if de == nil {
		return nil
	}
	n := len(d.rules)
	d.rules = de.covers(name, d.rules)
	if len(d.rules) == n {
		return nil
	}
	return de
}

// adopt marks a file that was covered by its directory only, through
// the event's fd. It runs on the permission loop after the answer, and
// never waits for placement (applyMu): when a walk or a tree event is
// running, it leaves the file to them (the tree event for its creation
// marks it).
func (e *Engine) adopt(fd int32, d *decision) {
	if !e.applyMu.TryLock() {
		return
	}
	defer e.applyMu.Unlock()
	de := d.viaDir
	name := d.real[strings.LastIndexByte(d.real, '/')+1:]
	if !e.wantsInodeMark(de, name) {
		return
	}
	e.mu.RLock()
	rules := de.covers(name, nil)
	t := e.tables
	e.mu.RUnlock()
	w := e.newWalker(t, de.g)
	w.markFile(int(fd), &d.st, join(de.path, name), rules)
}

// learnFacts gathers what policy.Judge asked for about the opener pid
// under rule r: whether its executable is one the rule's executable
// entries name (by identity: the inode that runs against the inodes the
// entries name in the rule's group's root), or its names (comm and the
// base name of its executable, which cost a read of /proc/PID/stat).
func (e *Engine) learnFacts(need policy.Need, r grule, d *decision) {
	if need&policy.NeedExe != 0 {
		id := devIno(e.who.ExeID(&d.who))
		a := d.allow
		if a == nil {
			a = &e.allowIDs
		}
		d.subject.ExeAllowed = policy.FactOf(id != (devIno{}) && a.has(e, r.g, r.AllowExePaths(), id))
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
		return ""
	}
	d.real, d.haveReal = proc.View(d.pathBuf[:n]), true
	return d.real
}

// allowIDs caches the identity (device, inode) of the executables that
// allow lists name, per group: the entry /usr/sbin/nginx of a container
// profile is that container's nginx. It belongs to the permission loop
// alone. A miss looks the entries up again, so an executable replaced by
// an upgrade (a new inode) is allowed again at its first open, and a
// reload or a container that goes clears it. Again at most every
// allowRecheck: a process outside the list, opening in a loop, would
// otherwise pay for a walk of every entry at each open.
type allowIDs struct {
	gen uint64
	m   map[allowKey]allowID

	// fakeNow, set by tests, stands in for the clock (unix nanoseconds)
	// when not zero, so that a test can step past allowRecheck.
	fakeNow atomic.Int64
}

type allowKey struct {
	g    *group
	path string
}

type allowID struct {
	id devIno
	at int64 // unix nanoseconds of the look-up
}

const allowRecheck = 100 * time.Millisecond

func (a *allowIDs) has(e *Engine, g *group, paths []string, id devIno) bool {
	if gen := e.allowGen.Load(); a.m == nil || a.gen != gen {
		a.m, a.gen = map[allowKey]allowID{}, gen
	}
	now := a.fakeNow.Load()
	if now == 0 {
		now = time.Now().UnixNano()
	}
	stale := false
	for _, p := range paths {
		x, ok := a.m[allowKey{g, p}]
		if ok && x.id == id {
			return true
		}
		if !ok || now-x.at >= int64(allowRecheck) {
			stale = true
		}
	}
	if !stale {
		return false
	}
	// Not a known one: the entries may have been replaced since.
	found := false
	for _, p := range paths {
		x := e.resolveID(g, p)
		a.m[allowKey{g, p}] = allowID{x, now}
		if x == id && x != (devIno{}) {
			found = true
		}
	}
	return found
}

// resolveID stats path in g's root (confined to it), following links.
func (e *Engine) resolveID(g *group, path string) devIno {
	w := walker{e: e, g: g, rootFD: g.RootFD}
	fd, err := w.openIn(path, 0, 0)
	if err != nil {
		return devIno{}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return devIno{}
	}
	return devIno{st.Dev, st.Ino}
}
