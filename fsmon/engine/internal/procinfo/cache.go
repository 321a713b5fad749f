package procinfo

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/execgen"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
)

// Mode says whether allow lists may cache what a process runs.
type Mode uint8

const (
	// CacheOn caches it per process, kept in step with exec, exit and
	// rename by the kernel's count (off by itself where the BPF counter
	// cannot be loaded).
	CacheOn Mode = iota
	// CacheOff reads /proc/PID/exe at every decision.
	CacheOff
)

// ExeCache remembers what each process runs, for allow lists: the
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
type ExeCache struct {
	log *slog.Logger
	fs  proc.FS
	gen *execgen.Counter // nil: off
	on  atomic.Bool

	mu  sync.Mutex
	m   map[int32]*Entry
	max int

	hits atomic.Uint64 // decisions answered from an entry, for tests

	// afterStat, set by tests, runs in fill between the stat of the
	// executable and the check that the process is not exiting.
	afterStat func(pid int32)
	// fakeSkips, set by tests, is added to the kernel's count of skipped
	// runs of the counting program.
	fakeSkips atomic.Uint64
}

// Entry is what the cache knows of one process.
type Entry struct {
	gen   uint64      // the slot's count before the facts were read
	pidfd proc.Pidfd  // for reports' parent and user; may be closed
	id    fsys.FileID // the executable's
	// names: comm and base were read (only name entries need them).
	names   bool
	commLen uint8
	comm    [16]byte
	base    string
	// report: the facts a report gives, read at the first reported
	// event; nil until then.
	report *reportFacts
	// handle: the executable's file handle, read at the first decision
	// that compares it (haveHandle).
	handle     proc.Handle
	haveHandle bool
	// loader: what the exec told the loader, as the exec program
	// recorded it (haveLoader), else read from /proc/PID/environ at the
	// first decision that asks.
	loader     fsmon.LoaderEnv
	haveLoader bool
}

type reportFacts struct {
	exe     string // as the daemon sees it
	comm    string
	cmdline string
}

func (en *Entry) close() { en.pidfd.Close() }

// On reports whether the cache is in use (the counter loaded, not turned
// off since).
func (c *ExeCache) On() bool { return c.on.Load() }

// Hits counts the decisions answered from an entry.
func (c *ExeCache) Hits() uint64 { return c.hits.Load() }

// Len is the number of entries.
func (c *ExeCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// NewExeCache loads the exec counter; where it cannot be loaded (no
// BPF here, or not allowed), every decision reads /proc, which is
// correct, only slower.
func NewExeCache(log *slog.Logger, mode Mode, fs proc.FS, max int) *ExeCache {
	c := &ExeCache{log: log, fs: fs, m: make(map[int32]*Entry, 256), max: max}
	if mode == CacheOff {
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
	if err := g.LoaderErr(); err != nil {
		log.Warn("the loader's environment is not recorded at exec: executable allow entries check /proc/PID/environ, which a process can rewrite", "err", err)
	}
	c.gen = g
	c.on.Store(true)
	return c
}

// Begin and End bracket the decisions of a batch; Begin reports whether
// they may use the cache, and End is given that answer.
func (c *ExeCache) Begin() bool {
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

func (c *ExeCache) End(began bool) {
	if began {
		c.mu.Unlock()
	}
}

// Lookup returns pid's entry if its slot's count has not moved; between begin and
// end only.
func (c *ExeCache) Lookup(pid int32) *Entry {
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

// Cached returns pid's entry without checking it, for tests.
func (c *ExeCache) Cached(pid int32) *Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[pid]
}

// ForgetExecs makes pid's entry look as if nothing had moved its count
// since it was filled: the stand-in, in tests, for an exec the kernel
// did not count, to show that the count is what makes an entry stale.
func (c *ExeCache) ForgetExecs(pid int32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if en := c.m[pid]; en != nil && c.gen != nil {
		en.gen = c.gen.Gen(pid)
	}
}

// FakeSkips adds n, in tests, to the kernel's count of skipped runs of
// the counting program.
func (c *ExeCache) FakeSkips(n uint64) { c.fakeSkips.Add(n) }

// Fill reads pid's executable identity after taking its slot's count:
// an exec after that makes the entry stale at its first use. A process
// that has begun to exit is not cached: its exit is counted before its
// executable is gone (Linux 6.16 moved the exit tracepoint before
// exit_mm), so an entry filled in between would keep the final count
// and pass for whatever process gets the pid next.
func (c *ExeCache) Fill(pid int32) *Entry {
	en := &Entry{gen: c.gen.Gen(pid)}
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
	en.id = fsys.FileID{Dev: st.Dev, Ino: st.Ino}
	// After the count: an exec since then moves it.
	en.loader, en.haveLoader = c.gen.Loader(pid)
	if len(c.m) >= c.max {
		c.evict()
	}
	c.m[pid] = en
	return en
}

// Watch turns the cache off for good if the kernel ever skips the
// counting program (a tracepoint hit on a CPU where it was running):
// that exec or exit may be uncounted. It checks every second.
func (c *ExeCache) Watch(ctx context.Context) {
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
func (c *ExeCache) evict() {
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

func (c *ExeCache) closeAll() {
	for _, en := range c.m {
		en.close()
	}
	clear(c.m)
}

// Close releases every entry and the counter, at shutdown.
func (c *ExeCache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeAll()
	if c.gen != nil {
		c.gen.Close()
		c.gen = nil
	}
}

// SlotGen is the count of pid's slot, which moves at every exec, exit
// and rename of the processes of that slot: with the pid, it names one
// run of one program (the engine keys its content-event verdicts by
// it). Between a Begin that said true and its End only.
func (c *ExeCache) SlotGen(pid int32) uint64 { return c.gen.Gen(pid) }
