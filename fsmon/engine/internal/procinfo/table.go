package procinfo

import (
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/container"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proctrace"
)

// Table is the process table: what the kernel said of every process at
// its exec and fork (fsmon/internal/proctrace), kept after its exit for
// a while, so that a change event read after its writer has gone still
// names it. One goroutine (Run) applies the kernel's records in order;
// the event loops read it. It has a fixed size: past it, the records of
// exited processes go first, oldest first, then any; each record
// dropped before its time is counted (Evictions).
//
// A process that started before the daemon is read from /proc once: at
// start (Seed), or when it forks or is the parent of one that execs.
type Table struct {
	log       *slog.Logger
	fs        proc.FS
	tr        *proctrace.Tracer
	max       int
	retention time.Duration
	onExec    func(pid int32, mntNS uint64)

	mu       sync.Mutex
	closed   bool
	m        map[int32]*Proc
	exited   []*Proc // in the order they exited; may hold records replaced since
	progress chan struct{}

	applied   atomic.Uint64 // records applied
	waiters   atomic.Int32  // Syncs waiting for progress
	evictions atomic.Uint64
	lagged    atomic.Uint64 // Syncs that gave up waiting
	// stuckAt is applied+1 when a Sync last gave up (0: none did): while
	// the reader has applied nothing since, it is stuck (a read of
	// /proc that does not return), and Syncs do not wait for it again.
	stuckAt atomic.Uint64

	seeded atomic.Bool // Seed has read /proc

	// beforeApply, set by tests (HoldApply), runs before each record is
	// applied: the stand-in for a reader that lags behind the kernel.
	beforeApply atomic.Pointer[func()]
}

// Proc is what the table knows of one process.
type Proc struct {
	PID, PPID int32
	UID, GID  int64
	// MntNS is its mount namespace's inode number, 0 when unknown.
	MntNS uint64
	// Start is its start time in ns of CLOCK_MONOTONIC; 0 when read
	// from /proc.
	Start uint64
	// Exe is its executable as the daemon sees it, "" when it could not
	// be told; ExecPath the path exec'd as the process gave it (a
	// script's interpreter), and ExeID the file's identity, from which
	// Exe can be found later (ResolveExe).
	Exe      string
	ExecPath string
	ExeID    fsys.FileID
	Comm     string
	Cmdline  string
	// Parent is what the table knew of the parent when this process
	// exec'd or was forked.
	Parent Parent
	// Exited is set once its last thread has exited, at ExitedAt.
	Exited   bool
	ExitedAt time.Time
	// Seq is the number of the kernel's record it was made from (0: from
	// /proc): a new exec or fork of the pid makes another.
	Seq uint64
}

// Parent is the facts of a process's parent.
type Parent struct {
	PID           int32
	Start         uint64
	Exe, ExecPath string
	ExeID         fsys.FileID
	Comm, Cmdline string
	MntNS         uint64
}

// AsParent is p's facts as a parent.
func (p *Proc) AsParent() Parent {
	return Parent{PID: p.PID, Start: p.Start, Exe: p.Exe, ExecPath: p.ExecPath, ExeID: p.ExeID,
		Comm: p.Comm, Cmdline: p.Cmdline, MntNS: p.MntNS}
}

// TableOptions configure a Table.
type TableOptions struct {
	// Size is the most records the table holds.
	Size int
	// Retention is how long a record is kept after its process exited.
	Retention time.Duration
	// OnExec, when set, is told of every exec the table applies, with
	// the mount namespace it ran in, on the table's own goroutine: it
	// must not block (the engine's discovery of containers follows
	// execs with it).
	OnExec func(pid int32, mntNS uint64)
}

// ErrTableOff says the table was turned off by configuration.
var ErrTableOff = errors.New("process table off")

// NewTable loads the kernel's exec, fork and exit programs; where they
// cannot be loaded the error says why, and reports read /proc.
func NewTable(log *slog.Logger, fs proc.FS, o TableOptions) (*Table, error) {
	if o.Size <= 0 {
		return nil, ErrTableOff
	}
	if fs.Root != "/proc" {
		return nil, errors.New("the process table follows real processes: /proc only")
	}
	if nested, err := nestedPIDNS(); err != nil || nested {
		// The programs number processes as the initial PID namespace
		// does, fanotify as the daemon's.
		return nil, errors.New("the daemon is not in the initial PID namespace: the kernel's records would not match the pids of events")
	}
	tr, err := proctrace.Open()
	if err != nil {
		return nil, err
	}
	if o.Retention <= 0 {
		o.Retention = 30 * time.Second
	}
	return &Table{
		log: log, fs: fs, tr: tr, max: o.Size, retention: o.Retention, onExec: o.OnExec,
		m: make(map[int32]*Proc, min(o.Size, 4096)), progress: make(chan struct{}),
	}, nil
}

// nestedPIDNS reports whether the daemon runs in a PID namespace below
// the initial one (its NSpid line in /proc/self/status has more than
// one pid).
func nestedPIDNS() (bool, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f, ok := strings.CutPrefix(l, "NSpid:"); ok {
			return len(strings.Fields(f)) > 1, nil
		}
	}
	return false, nil
}

// Run applies the kernel's records until Close. It also reads, once,
// the processes that run already (Seed), beside it.
func (t *Table) Run() {
	go t.Seed()
	var r proctrace.Record
	for {
		if err := t.tr.Read(&r); err != nil {
			if errors.Is(err, proctrace.ErrNone) {
				t.mu.Lock()
				t.expire(time.Now())
				t.mu.Unlock()
				continue
			}
			if !errors.Is(err, proctrace.ErrClosed) {
				t.log.Error("the process table stopped reading the kernel's records: reports read /proc from now on", "err", err)
			}
			return
		}
		if f := t.beforeApply.Load(); f != nil {
			(*f)()
		}
		t.apply(&r, time.Now())
	}
}

// Seed reads from /proc every process that started before the table
// and keeps those it has no record of: a process that started before the
// daemon and exits later is named by what /proc said while it ran. At
// most half the table is filled this way, so that seeding never evicts.
// A read that does not return (a process holding its memory lock) holds
// up only the rest of the seeding, never the table's reader.
func (t *Table) Seed() {
	d, err := os.Open(t.fs.Root)
	if err != nil {
		return
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return
	}
	for _, n := range names {
		pid, err := strconv.ParseInt(n, 10, 32)
		if err != nil {
			continue
		}
		t.mu.Lock()
		_, known := t.m[int32(pid)]
		room := !t.closed && len(t.m) < t.max/2
		t.mu.Unlock()
		if !room {
			break
		}
		if known {
			continue
		}
		p := t.fromProc(int32(pid))
		if p.Comm == "" || p.Exe == "" {
			continue // gone, or a kernel thread
		}
		t.mu.Lock()
		if _, ok := t.m[p.PID]; !ok && !t.closed {
			t.insert(p, time.Now())
		}
		t.mu.Unlock()
	}
	t.seeded.Store(true)
}

// Seeded reports whether Seed has finished.
func (t *Table) Seeded() bool { return t.seeded.Load() }

// HoldApply makes Run call f before it applies each record, for tests
// that hold the table behind the kernel.
func (t *Table) HoldApply(f func()) { t.beforeApply.Store(&f) }

// Lagged is how many Syncs gave up waiting for the reader.
func (t *Table) Lagged() uint64 { return t.lagged.Load() }

// Waiting is how many Syncs wait for the table to catch up, for tests.
func (t *Table) Waiting() int { return int(t.waiters.Load()) }

// Close stops Run and unloads the programs.
func (t *Table) Close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	t.closed = true
	t.tr.Close()
}

func (t *Table) apply(r *proctrace.Record, now time.Time) {
	switch r.Kind {
	case proctrace.Exec:
		p := &Proc{
			PID: r.PID, PPID: r.PPID, UID: int64(r.EUID), GID: int64(r.EGID),
			MntNS: uint64(r.MntNS), Start: r.Start,
			ExecPath: r.Path, ExeID: fsys.FileID{Dev: r.Dev, Ino: r.Ino},
			Comm: r.Comm, Cmdline: proc.ParseCmdline(r.Args), Seq: r.Seq,
		}
		p.Exe = t.exeNow(p)
		p.Parent = t.known(r.PPID).AsParent()
		t.put(p, now)
		if t.onExec != nil {
			t.onExec(r.PID, uint64(r.MntNS))
		}
	case proctrace.Fork:
		src := t.known(r.Forker)
		p := &Proc{
			PID: r.PID, PPID: r.PPID, UID: int64(r.EUID), GID: int64(r.EGID),
			MntNS: uint64(r.MntNS), Start: r.Start,
			Exe: src.Exe, ExecPath: src.ExecPath, ExeID: src.ExeID, Comm: r.Comm, Cmdline: src.Cmdline,
			Seq: r.Seq,
		}
		if r.PPID == r.Forker {
			p.Parent = src.AsParent()
		} else {
			p.Parent = t.known(r.PPID).AsParent()
		}
		t.put(p, now)
	case proctrace.Exit:
		t.mu.Lock()
		if p := t.m[r.PID]; p != nil && !p.Exited && (p.Start == 0 || p.Start == r.Start) {
			p.Exited, p.ExitedAt = true, now
			t.exited = append(t.exited, p)
		}
		t.mu.Unlock()
	}
	t.applied.Add(1)
	if t.waiters.Load() > 0 {
		t.mu.Lock()
		close(t.progress)
		t.progress = make(chan struct{})
		t.mu.Unlock()
	}
}

// exeNow reads /proc/PID/exe of a process that just exec'd, if it is
// still the file the exec record names: the path then is what /proc
// would say, symlinks resolved. Else "" (it exited, or exec'd again),
// and ResolveExe finds it from the path exec'd.
func (t *Table) exeNow(p *Proc) string {
	var st unix.Stat_t
	if t.fs.StatExe(p.PID, &st) != nil || st.Ino != p.ExeID.Ino || st.Dev != p.ExeID.Dev {
		return ""
	}
	var b [unix.PathMax]byte
	x, err := t.fs.ReadExe(p.PID, b[:])
	if err != nil {
		return ""
	}
	return string(x)
}

// known returns pid's record, reading one from /proc (and keeping it)
// when the table has none: a process that started before the daemon.
// Never nil.
func (t *Table) known(pid int32) *Proc {
	t.mu.Lock()
	p := t.m[pid]
	t.mu.Unlock()
	if p != nil {
		return p
	}
	p = t.fromProc(pid)
	if p.Comm == "" {
		return p // gone: nothing to keep
	}
	t.mu.Lock()
	if q := t.m[pid]; q != nil {
		p = q
	} else {
		t.insert(p, time.Now())
	}
	t.mu.Unlock()
	return p
}

// fromProc reads pid's facts from /proc; only the pid when it is gone.
func (t *Table) fromProc(pid int32) *Proc {
	p := &Proc{PID: pid, UID: -1, GID: -1}
	var sb [1024]byte
	v, err := t.fs.ReadStat(pid, sb[:])
	if err != nil {
		return p
	}
	p.PPID, p.Comm = v.PPID, string(v.Comm)
	var eb [unix.PathMax]byte
	if x, err := t.fs.ReadExe(pid, eb[:]); err == nil {
		p.Exe = string(x)
	}
	p.Cmdline, _ = t.fs.Cmdline(pid)
	if uid, err := t.fs.EUID(pid); err == nil {
		p.UID = uid
	}
	if ns, err := (container.FS{Root: t.fs.Root}).MountNS(pid); err == nil {
		p.MntNS = ns
	}
	return p
}

// put makes p the record of its pid.
func (t *Table) put(p *Proc, now time.Time) {
	t.mu.Lock()
	t.insert(p, now)
	t.mu.Unlock()
}

// insert adds or replaces p's record, making room if the table is
// full; with mu held.
func (t *Table) insert(p *Proc, now time.Time) {
	t.expire(now)
	if _, ok := t.m[p.PID]; !ok && len(t.m) >= t.max {
		t.evict()
	}
	t.m[p.PID] = p
}

// expire forgets the exited processes past their retention.
func (t *Table) expire(now time.Time) {
	i := 0
	for ; i < len(t.exited); i++ {
		p := t.exited[i]
		if now.Sub(p.ExitedAt) < t.retention {
			break
		}
		if t.m[p.PID] == p {
			delete(t.m, p.PID)
		}
	}
	if i > 0 {
		t.exited = append(t.exited[:0], t.exited[i:]...)
	}
}

// evict drops one record before its time: the oldest exited process,
// else any.
func (t *Table) evict() {
	for len(t.exited) > 0 {
		p := t.exited[0]
		t.exited = t.exited[1:]
		if t.m[p.PID] == p {
			delete(t.m, p.PID)
			t.evictions.Add(1)
			return
		}
	}
	for pid := range t.m {
		delete(t.m, pid)
		t.evictions.Add(1)
		return
	}
}

// Sync waits, at most max, until every record the kernel wrote before
// the call is applied: a change event read now was made before, so its
// process's exec is in the table after Sync. It reports whether it got
// there.
func (t *Table) Sync(max time.Duration) bool {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return false
	}
	target := t.tr.Published()
	t.mu.Unlock()
	applied := t.applied.Load()
	if applied >= target {
		return true
	}
	if t.stuckAt.Load() == applied+1 {
		return false // the reader has not moved since a Sync gave up on it
	}
	t.waiters.Add(1)
	defer t.waiters.Add(-1)
	// The programs do not wake the reader (a wakeup per exec would cost
	// every exec a context switch): wake it now.
	t.mu.Lock()
	if !t.closed {
		t.tr.Wake()
	}
	t.mu.Unlock()
	timer := time.NewTimer(max)
	defer timer.Stop()
	for {
		t.mu.Lock()
		ch := t.progress
		t.mu.Unlock()
		if t.applied.Load() >= target {
			return true
		}
		select {
		case <-ch:
		case <-timer.C:
			t.lagged.Add(1)
			t.stuckAt.Store(t.applied.Load() + 1)
			return false
		}
	}
}

// Get returns a copy of pid's record.
func (t *Table) Get(pid int32) (Proc, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.m[pid]
	if p == nil {
		return Proc{}, false
	}
	return *p, true
}

// setExe remembers the executable found for pid's record later.
func (t *Table) setExe(pid int32, start uint64, exe string) {
	t.mu.Lock()
	if p := t.m[pid]; p != nil && p.Start == start && p.Exe == "" {
		p.Exe = exe
	}
	t.mu.Unlock()
}

// TableStats are the table's figures, for metrics.
type TableStats struct {
	Records   int
	Size      int
	Evictions uint64
	// Lost are records the kernel could not write: the ring buffer was
	// full, or a program was skipped.
	Lost uint64
}

// Stats returns the table's figures.
func (t *Table) Stats() TableStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := TableStats{Records: len(t.m), Size: t.max, Evictions: t.evictions.Load()}
	if !t.closed {
		s.Lost = t.tr.Lost() + t.tr.Skipped()
	}
	return s
}

// ResolveExe finds the executable of a record whose Exe is unknown
// (its process had gone, or exec'd again, by the time the record was
// read): the path exec'd, resolved in the process's root rootFD, if it
// still names the file that was exec'd. "" otherwise. What it finds is
// kept in the record.
func (t *Table) ResolveExe(p *Proc, rootFD int) string {
	if p.Exe != "" {
		return p.Exe
	}
	exe := resolveIn(rootFD, p.ExecPath, p.ExeID)
	if exe != "" {
		t.setExe(p.PID, p.Start, exe)
	}
	return exe
}

// ResolveParent is ResolveExe for a parent's facts.
func (t *Table) ResolveParent(p *Parent, rootFD int) string {
	if p.Exe != "" {
		return p.Exe
	}
	exe := resolveIn(rootFD, p.ExecPath, p.ExeID)
	if exe != "" {
		t.setExe(p.PID, p.Start, exe)
	}
	return exe
}

// resolveIn resolves path in rootFD, symlinks followed and confined to
// the root, and returns it as the daemon sees it if it is the file id.
func resolveIn(rootFD int, path string, id fsys.FileID) string {
	if path == "" || !strings.HasPrefix(path, "/") || id == (fsys.FileID{}) {
		return ""
	}
	fd, err := fsys.OpenInRoot(rootFD, path, 0, 0)
	if err != nil {
		return ""
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Ino != id.Ino || st.Dev != id.Dev {
		return ""
	}
	return fsys.Path(fd)
}
