package engine

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/procinfo"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

const (
	permBufSize = 64 << 10
	// a permission event without info records is 24 bytes.
	maxPermSlots = permBufSize / 24
)

// Slot states, in the low two bits of permSlot.state; the rest is the
// batch generation, so that a late watchdog can never claim the slot of a
// later batch.
const (
	slotPending  = 0
	slotLoop     = 1 // answered by the loop
	slotWatchdog = 2 // being answered by the watchdog
	slotDefault  = 3 // answered by the watchdog with the default
)

type permSlot struct {
	fd    int32
	pid   int32
	mask  fanotify.Mask
	state atomic.Uint64
}

// permBatch is the batch the loop is working on, shared with the
// watchdog.
type permBatch struct {
	gen   atomic.Uint64
	start atomic.Int64 // unix nanoseconds the batch was read; 0 when idle
	n     atomic.Int32
	slots [maxPermSlots]permSlot
}

// decision is the loop's scratch space, reused for every event so the
// permission path does not allocate for events it does not report.
// What one decision learns sits in facts, which the next decision resets
// with one assignment: nothing of one process's decision can carry into
// the next. The rest is scratch whose contents are only read through
// facts (the views point into the buffers).
type decision struct {
	facts
	rules  []grule // the rules that cover the file; reused
	cached bool    // the batch holds the executable cache (ExeCache.Begin)

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

func (e *Engine) permLoop() error {
	buf := make([]byte, permBufSize)
	batch := e.batch
	var d decision
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	handle := func(b []byte) {
		readAt := time.Now()
		gen := batch.gen.Add(1)
		cnt := 0
		perr := fanotify.Parse(b, func(ev *fanotify.Event) {
			if ev.Mask.Any(fanotify.QOverflow) {
				e.overflowFan.Add(1)
				e.dropKernel.Add(1)
				return
			}
			if ev.FD < 0 || cnt >= maxPermSlots {
				return
			}
			s := &batch.slots[cnt]
			s.fd, s.pid, s.mask = ev.FD, ev.PID, ev.Mask
			s.state.Store(gen << 2)
			cnt++
		})
		batch.n.Store(int32(cnt))
		batch.start.Store(readAt.UnixNano())
		d.cached = e.exes.Begin()
		for i := 0; i < cnt; i++ {
			e.handlePerm(&batch.slots[i], gen, readAt, &d)
		}
		e.exes.End(d.cached)
		d.cached = false
		batch.start.Store(0)
		if perr != nil {
			e.log.Warn("malformed permission event batch", "err", perr)
		}
	}
	for {
		n, err := e.perm.Read(buf)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) && e.stopping.Load() {
				return nil // drained
			}
			if errors.Is(err, unix.EAGAIN) {
				continue
			}
			if transient(err) {
				// The kernel could not give the event an fd (out of fds
				// or memory); it answers that event itself. Reading goes
				// on: an exit here would fail everything open.
				e.readErrors.Add(1)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("reading permission events: %w", err)
		}
		handle(buf[:n])
	}
}

// answer writes the verdict unless the watchdog already answered; it
// reports whether the loop's verdict is the one the kernel got.
func (e *Engine) answer(s *permSlot, gen uint64, v fanotify.Verdict) bool {
	if s.state.CompareAndSwap(gen<<2|slotPending, gen<<2|slotLoop) {
		if err := e.perm.Respond(s.fd, v); err != nil {
			e.log.Error("answering permission event", "err", err)
		}
		return true
	}
	// Answered already by the loop (a second call, from the recovery of a
	// panic): nothing to do. Claimed by the watchdog: wait for its write
	// before the fd may be closed, so the number cannot be reused under
	// its answer.
	for {
		switch s.state.Load() {
		case gen<<2 | slotLoop, gen<<2 | slotDefault:
			return false
		}
		runtime.Gosched()
	}
}

func (e *Engine) handlePerm(s *permSlot, gen uint64, readAt time.Time, d *decision) {
	e.permEvents.Add(1)
	defer fanotify.CloseFD(s.fd)
	defer func() {
		// A bug must not take the daemon down (and the protection with
		// it): the event gets the default answer, the loop goes on.
		if r := recover(); r != nil {
			v := fanotify.Allow
			if e.opts.Default == FailClosed {
				v = fanotify.Deny
			}
			e.answer(s, gen, v)
			e.log.Error("permission decision failed; default answer written", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	if s.pid == e.selfPID {
		// Our own opens are answered at once, never decided.
		e.answer(s, gen, fanotify.Allow)
		return
	}
	e.decide(s, d)
	ours := e.answer(s, gen, d.verdict())
	took := time.Since(readAt)
	e.decisions.Observe(took)
	if d.viaDir != nil {
		// Covered by its name only: a file new in a marked directory.
		// Give it marks of its own now, after the answer, so that it is
		// protected if it is moved or linked elsewhere before inotify's
		// report of its creation is handled.
		e.adopt(s.fd, d)
	}
	if !ours || d.kind == 0 {
		return
	}
	// An exec makes two permission events, FAN_OPEN_EXEC_PERM and then
	// FAN_OPEN_PERM of the same file by the same process: one report.
	key := execKey{s.pid, d.id}
	if s.mask.Any(fanotify.OpenExecPerm) {
		e.lastExec = key
	} else if e.lastExec == key {
		e.lastExec = execKey{}
		return
	} else {
		e.lastExec = execKey{}
	}
	op := fsmon.OpOpen
	if s.mask.Any(fanotify.OpenExecPerm) {
		op = fsmon.OpExec
	}
	ev := fsmon.Event{
		Time:      readAt,
		Kind:      d.kind,
		Op:        op,
		Mode:      d.rule.Mode,
		Profile:   d.rule.Profile.Name,
		Filter:    d.rule.Name,
		Path:      d.path,
		Process:   d.proc,
		Container: d.group.Container(),
		Count:     1,
		Decision:  took,
	}
	e.enqueue(&ev)
}

// execKey names the file a process exec'd, to fold the exec's two
// permission events into one report.
type execKey struct {
	pid int32
	id  devIno
}

// decide works out the verdict of one permission event. The common
// cases (a file no rule covers, a process its allow list names) make a
// handful of syscalls and no allocation: fstat of the event fd, a table
// lookup, and for block rules the readlink of /proc/PID/exe.
func (e *Engine) decide(s *permSlot, d *decision) {
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
		d.subject.ExeAllowed = policy.FactOf(id != (devIno{}) && e.allowIDs.has(e, r.g, r.AllowExePaths(), id))
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
	d.real, d.haveReal = unsafeString(d.pathBuf[:n]), true
	return d.real
}

// watchdog answers the loop's batch with the default once it is older
// than the deadline.
func (e *Engine) watchdog(done <-chan struct{}) {
	tick := e.opts.DecisionTimeout / 4
	if tick < time.Millisecond {
		tick = time.Millisecond
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	v := fanotify.Allow
	if e.opts.Default == FailClosed {
		v = fanotify.Deny
	}
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		b := e.batch
		// Seqlock: start is only trusted as the start of batch gen when
		// gen is the same before and after it is read. The loop zeroes
		// start before it moves to the next generation, and a slot of a
		// later batch never matches gen in the CAS below.
		gen := b.gen.Load()
		start := b.start.Load()
		if gen != b.gen.Load() || start == 0 || time.Since(time.Unix(0, start)) < e.opts.DecisionTimeout {
			continue
		}
		n := int(b.n.Load())
		late := 0
		for i := 0; i < n; i++ {
			s := &b.slots[i]
			if s.state.CompareAndSwap(gen<<2|slotPending, gen<<2|slotWatchdog) {
				if err := e.perm.Respond(s.fd, v); err != nil {
					e.log.Error("answering late permission event", "err", err)
				}
				s.state.Store(gen<<2 | slotDefault)
				late++
			}
		}
		if late > 0 {
			e.timeouts.Add(uint64(late))
			e.log.Warn("permission decisions missed their deadline; default answer written",
				"count", late, "deadline", e.opts.DecisionTimeout, "answer", v.String())
		}
		// The loop is stuck in a decision: what the kernel queues behind
		// it must not wait for it. A second reader answers with the
		// default until the loop moves on.
		if e.rescuing.CompareAndSwap(false, true) {
			e.rescued = make(chan struct{})
			go e.rescue(gen, v, e.rescued)
		}
	}
}

// rescue reads and answers permission events with the default while the
// loop is stuck in batch gen. It makes no decision (whatever held the
// loop up could hold it up too): read, answer, close.
func (e *Engine) rescue(gen uint64, v fanotify.Verdict, done chan struct{}) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	defer close(done)
	defer e.rescuing.Store(false)
	buf := make([]byte, 4096)
	b := e.batch
	for b.gen.Load() == gen && b.start.Load() != 0 && !e.stopping.Load() {
		n, err := e.perm.Read(buf)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || !transient(err) {
				return
			}
			continue
		}
		answered := 0
		fanotify.Parse(buf[:n], func(ev *fanotify.Event) {
			if ev.FD < 0 {
				return
			}
			a := v
			if ev.PID == e.selfPID {
				a = fanotify.Allow
			}
			e.perm.Respond(ev.FD, a)
			fanotify.CloseFD(ev.FD)
			answered++
		})
		e.permEvents.Add(uint64(answered))
		e.timeouts.Add(uint64(answered))
	}
}

// unsafeString views b as a string without copying; the caller must not
// keep it past b's next change.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
