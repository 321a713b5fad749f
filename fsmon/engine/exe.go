package engine

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/execgen"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
)

// exeCache remembers what each process runs, for allow lists: the
// identity (device, inode) of its executable, and for name entries its
// name and the base name of its executable; and for reports the facts
// that stay with a program (executable path, name, command line).
// Reading them costs a stat of /proc/PID/exe (about 2 µs, half of an
// allowed decision) and more, and neither the pid nor its start time
// says when they change: an exec keeps both.
//
// So the kernel counts, per process slot, every exec, exit and rename
// (fsmon/internal/execgen: a BPF program on those tracepoints, its array
// mapped into the daemon). An entry keeps the count of its process's
// slot from before its facts were read, and is used only while the count
// has not moved: one memory load. The tracepoints run in the process,
// inside the system call: a new program cannot open anything before its
// exec has moved the count, and a pid cannot be reused before its exit
// has. Two earlier designs were dropped in review: the process events
// connector (any local user can mute it on Linux 6.6+) and holding the
// process's mm through /proc/PID/pagemap (any user can keep an old mm in
// use by reading /proc/PID/cmdline into a buffer that faults slowly).
//
// The parent pid and the user change without an exec; reports read them
// fresh through a pidfd (PIDFD_GET_INFO) when the kernel has it.
//
// Only the permission loop fills and reads it; mu is for tests that
// decide beside the loop.
type exeCache struct {
	log *slog.Logger
	fs  proc.FS
	gen *execgen.Counter // nil: off
	on  atomic.Bool

	mu  sync.Mutex
	m   map[int32]*exeEntry
	max int

	hits atomic.Uint64 // decisions answered from an entry, for tests

	// afterStat, set by tests, runs in fill between the stat of the
	// executable and the check that the process is not exiting.
	afterStat func(pid int32)
	// fakeSkips, set by tests, is added to the kernel's count of skipped
	// runs of the counting program.
	fakeSkips atomic.Uint64
}

type exeEntry struct {
	gen   uint64     // the slot's count before the facts were read
	pidfd proc.Pidfd // for reports' parent and user; may be closed
	id    devIno     // the executable's
	// names: comm and base were read (only name entries need them).
	names   bool
	commLen uint8
	comm    [16]byte
	base    string
	// report: the facts a report gives, read at the first reported
	// event; nil until then.
	report *reportFacts
}

type reportFacts struct {
	exe     string // as the daemon sees it
	comm    string
	cmdline string
}

func (en *exeEntry) close() { en.pidfd.Close() }

// newExeCache loads the exec counter; where it cannot be loaded (no
// BPF here, or not allowed), every decision reads /proc, which is
// correct, only slower.
func newExeCache(log *slog.Logger, mode ExeCache, fs proc.FS, max int) *exeCache {
	c := &exeCache{log: log, fs: fs, m: make(map[int32]*exeEntry, 256), max: max}
	if mode == ExeCacheOff {
		log.Info("executable cache off (--permission.exe-cache=off)")
		return c
	}
	if fs.Root != "/proc" {
		return c // the counts are of real processes
	}
	g, err := execgen.Open()
	if err != nil {
		log.Warn("exec counter unavailable: allow lists read /proc/PID/exe at every decision", "err", err)
		return c
	}
	log.Info("executable cache on: execs, exits and renames counted by a BPF program")
	c.gen = g
	c.on.Store(true)
	return c
}

// begin and end bracket the decisions of a batch; begin reports whether
// they may use the cache, and end is given that answer.
func (c *exeCache) begin() bool {
	if !c.on.Load() {
		return false
	}
	c.mu.Lock()
	if c.gen == nil || !c.on.Load() {
		c.mu.Unlock() // closed, or turned off meanwhile
		return false
	}
	return true
}

func (c *exeCache) end(began bool) {
	if began {
		c.mu.Unlock()
	}
}

// lookup returns pid's entry if its slot's count has not moved; between begin and
// end only.
func (c *exeCache) lookup(pid int32) *exeEntry {
	en := c.m[pid]
	if en == nil {
		return nil
	}
	if en.gen != c.gen.Gen(pid) {
		en.close()
		delete(c.m, pid)
		return nil
	}
	c.hits.Add(1)
	return en
}

// fill reads pid's executable identity after taking its slot's count:
// an exec after that makes the entry stale at its first use. A process
// that has begun to exit is not cached: its exit is counted before its
// executable is gone (Linux 6.16 moved the exit tracepoint before
// exit_mm), so an entry filled in between would keep the final count
// and pass for whatever process gets the pid next.
func (c *exeCache) fill(pid int32) *exeEntry {
	en := &exeEntry{gen: c.gen.Gen(pid)}
	en.pidfd, _ = proc.OpenPidfd(pid)
	var st unix.Stat_t
	if c.fs.StatExe(pid, &st) != nil {
		en.close()
		return nil
	}
	if c.afterStat != nil {
		c.afterStat(pid)
	}
	var b [1024]byte
	if v, err := c.fs.ReadStat(pid, b[:]); err != nil || v.Flags&proc.PFExiting != 0 {
		en.close()
		return nil
	}
	en.id = devIno{st.Dev, st.Ino}
	if len(c.m) >= c.max {
		c.evict()
	}
	c.m[pid] = en
	return en
}

// watch turns the cache off for good if the kernel ever skips the
// counting program (a tracepoint hit on a CPU where it was running):
// that exec or exit may be uncounted. It checks every second.
func (c *exeCache) watch(ctx context.Context) {
	if !c.on.Load() {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		if c.gen == nil {
			c.mu.Unlock()
			return
		}
		n, err := c.gen.Skipped()
		n += c.fakeSkips.Load()
		if err == nil && n > 0 {
			c.closeAll()
			c.on.Store(false)
			c.log.Error("the kernel skipped the exec counting program; the executable cache is off from now on", "skipped", n)
		}
		c.mu.Unlock()
		if !c.on.Load() {
			return
		}
	}
}

// evict makes room: stale entries (processes gone or changed) first,
// then all. Each entry holds a pidfd.
func (c *exeCache) evict() {
	for pid, en := range c.m {
		if en.gen != c.gen.Gen(pid) {
			en.close()
			delete(c.m, pid)
		}
	}
	if len(c.m) >= c.max*3/4 {
		c.closeAll()
	}
}

func (c *exeCache) closeAll() {
	for _, en := range c.m {
		en.close()
	}
	clear(c.m)
}

// close releases every entry and the counter, at shutdown.
func (c *exeCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeAll()
	if c.gen != nil {
		c.gen.Close()
		c.gen = nil
	}
}

// entry returns pid's cached entry, filling it on a miss; nil when the
// decision may not use the cache or pid cannot be cached.
func (e *Engine) entry(pid int32, d *decision) *exeEntry {
	if !d.cached {
		return nil
	}
	// Once per decision, also when pid cannot be cached: a failed fill
	// is not tried again by the next question of the same decision.
	if d.haveEntry {
		return d.entry
	}
	en := e.exes.lookup(pid)
	if en == nil {
		en = e.exes.fill(pid)
	}
	d.entry, d.haveEntry = en, true
	return en
}

// exeID is the identity of pid's executable.
func (e *Engine) exeID(pid int32, d *decision) devIno {
	if d.haveExeID {
		return d.exeID
	}
	d.haveExeID = true
	if en := e.entry(pid, d); en != nil {
		d.exeID = en.id
		return d.exeID
	}
	var st unix.Stat_t
	d.exeID = devIno{}
	if e.proc.StatExe(pid, &st) == nil {
		d.exeID = devIno{st.Dev, st.Ino}
	}
	return d.exeID
}

// exeNames returns pid's name (comm) and the base name of its
// executable, for name entries. The views are valid until the next
// decision.
func (e *Engine) exeNames(pid int32, d *decision) (comm, base string) {
	en := e.entry(pid, d)
	if en != nil && en.names {
		d.commBuf = en.comm
		return unsafeString(d.commBuf[:en.commLen]), en.base
	}
	var raw []byte
	if b, err := e.proc.ReadExe(pid, d.exeBuf[:]); err == nil {
		raw = b
	}
	base = unsafeString(raw)
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	if v, ok := e.stat(pid, d); ok {
		comm = unsafeString(v.Comm)
	}
	if en != nil && len(raw) > 0 {
		en.names = true
		en.commLen = uint8(copy(en.comm[:], comm))
		en.base = strings.Clone(base)
	}
	return comm, base
}

// reportProcess gathers the facts of pid for a report, while it waits
// for its answer, so that they are complete even for a process that
// exits at its EPERM. With a cache entry, what stays with the program
// is read once per exec, and the parent and user come from the pidfd;
// without one, the command line and user are cached per (pid, start
// time, executable) and the rest is read every time.
func (e *Engine) reportProcess(pid int32, d *decision) fsmon.Process {
	en := e.entry(pid, d)
	if en != nil && en.report != nil {
		if in, err := en.pidfd.Info(); err == nil {
			f := en.report
			return fsmon.Process{PID: pid, ParentPID: in.PPID, ExecutablePath: d.group.inside(f.exe),
				ExecutableName: f.comm, CommandLine: f.cmdline, UserID: in.EUID}
		}
	}
	raw := ""
	if b, err := e.proc.ReadExe(pid, d.exeBuf[:]); err == nil {
		raw = string(b)
	}
	p := e.process(pid, d.group.inside(raw), d)
	if en != nil && raw != "" && d.haveStat {
		en.report = &reportFacts{exe: raw, comm: p.ExecutableName, cmdline: p.CommandLine}
	}
	return p
}
