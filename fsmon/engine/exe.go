package engine

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/cnproc"
)

// exeCache remembers what each process runs, for allow lists: the
// identity (device, inode) of its executable, and for name entries its
// name and the base name of its executable. Reading them costs a stat of
// /proc/PID/exe (about 2 µs, half of an allowed decision) and more, and
// neither the pid nor its start time says when they change: an exec keeps
// both. So the cache is kept in step by the kernel's process events
// connector, whose exec, exit, fork and name-change events a process
// queues on our socket itself, inside the system call, before it returns.
// An open made after an exec therefore reaches the permission queue after
// the exec's event reached the socket, and the permission loop, which
// drains the socket after reading a batch and before deciding it, never
// decides with an entry an exec made stale.
//
// Losing an event would break that, so the cache is flushed whenever one
// may be lost: the kernel says so (ENOBUFS), or a CPU's event numbers
// have a gap (the one silent loss, an allocation failing in the kernel,
// happens after the number is taken). Without the connector (not in the
// initial network and PID namespaces, or a kernel without it) every
// decision reads /proc, as it did before.
//
// The permission loop holds mu from the drain to the batch's last
// decision; a goroutine drains the socket between batches, so that a
// quiet permission queue does not let the socket overflow.
type exeCache struct {
	log  *slog.Logger
	conn *cnproc.Conn // nil: off

	mu      sync.Mutex
	broken  bool // the socket failed: off until the daemon restarts
	m       map[int32]exeEntry
	max     int
	seqs    []cpuSeq // per CPU: the number of its next event
	buf     []byte
	onEvent func(*cnproc.Event)

	hits, misses, flushes, gaps atomic.Uint64
}

type cpuSeq struct {
	next uint32
	seen bool
}

type exeEntry struct {
	id devIno // the executable's; zero if it could not be read
	// names: comm and base were read (only name entries need them).
	names   bool
	commLen uint8
	comm    [16]byte
	base    string
}

// newExeCache opens the connector and checks it; on any failure the
// cache is off, which is correct, only slower.
func newExeCache(log *slog.Logger, mode ExeCache, procRoot string, max int) *exeCache {
	c := &exeCache{log: log, m: make(map[int32]exeEntry, 256), max: max, buf: make([]byte, 16<<10)}
	c.onEvent = c.apply
	if mode == ExeCacheOff || procRoot != "/proc" {
		return c // the connector speaks of the real /proc's processes
	}
	conn, err := cnproc.Open(4 << 20)
	if err == nil {
		if err = conn.SelfTest(time.Second); err != nil {
			conn.Close()
		}
	}
	if err != nil {
		log.Info("process events connector unavailable: allow lists read /proc/PID/exe at every decision", "err", err)
		return c
	}
	c.conn = conn
	return c
}

// on reports whether the cache is in use.
func (c *exeCache) on() bool {
	if c.conn == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.broken
}

// begin locks the cache and brings it up to date with every event queued
// so far; it reports whether the cache may be used until end.
func (c *exeCache) begin() bool {
	if c.conn == nil {
		return false
	}
	c.mu.Lock()
	c.drainLocked()
	return !c.broken
}

func (c *exeCache) end() {
	if c.conn != nil {
		c.mu.Unlock()
	}
}

// drainLocked applies every queued event.
func (c *exeCache) drainLocked() {
	for !c.broken {
		err := c.conn.Recv(c.buf, c.onEvent)
		switch {
		case err == nil:
		case errors.Is(err, unix.EAGAIN):
			return
		case errors.Is(err, cnproc.ErrLost):
			c.flushLocked()
		default:
			if errors.Is(err, unix.EBADF) {
				c.broken = true // closed at shutdown
				clear(c.m)
				return
			}
			// A malformed datagram, or a socket error: which events it
			// held is unknown, so nothing cached can be trusted.
			c.flushLocked()
			var errno unix.Errno
			if errors.As(err, &errno) {
				c.log.Error("process events connector failed: allow lists read /proc/PID/exe from now on", "err", err)
				c.broken = true
				return
			}
			c.log.Warn("malformed process event; cache flushed", "err", err)
		}
	}
}

// flushLocked forgets every entry. The CPUs' numbering is kept: a
// gap is a gap whenever it shows.
func (c *exeCache) flushLocked() {
	if len(c.m) > 0 {
		clear(c.m)
	}
	c.flushes.Add(1)
}

// apply is called with mu held, for each event read.
func (c *exeCache) apply(ev *cnproc.Event) {
	if ev.What == cnproc.None {
		return // an acknowledgement, numbered by its requester
	}
	switch {
	case ev.CPU >= 1<<12:
		c.flushLocked() // not a CPU number: trust nothing
	case int(ev.CPU) >= len(c.seqs) || !c.seqs[ev.CPU].seen:
		// A CPU's first event: whatever it lost before is unknown, and
		// entries stored until now may predate it.
		if int(ev.CPU) >= len(c.seqs) {
			c.seqs = append(c.seqs, make([]cpuSeq, int(ev.CPU)+1-len(c.seqs))...)
		}
		c.flushLocked()
	case ev.Seq != c.seqs[ev.CPU].next:
		c.gaps.Add(1)
		c.flushLocked()
	}
	if ev.CPU < 1<<12 {
		c.seqs[ev.CPU] = cpuSeq{next: ev.Seq + 1, seen: true}
	}
	switch ev.What {
	case cnproc.Exec, cnproc.Exit, cnproc.Comm, cnproc.Fork:
		// Keyed by tgid, as fanotify reports the opener: an exec by any
		// thread is the process's, and a fork's child must start afresh.
		delete(c.m, ev.TGID)
	}
}

// run drains the socket whenever it has events, until ctx ends.
func (c *exeCache) run(ctx context.Context) {
	if c.conn == nil {
		return
	}
	rc, err := c.conn.File().SyscallConn()
	if err != nil {
		c.log.Error("process events connector", "err", err)
		return
	}
	go func() {
		<-ctx.Done()
		c.mu.Lock()
		c.broken = true
		clear(c.m)
		c.mu.Unlock()
		c.conn.Close()
	}()
	rc.Read(func(uintptr) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.broken {
			c.drainLocked()
		}
		return c.broken
	})
}

// lookup returns pid's entry; only between begin and end.
func (c *exeCache) lookup(pid int32) (exeEntry, bool) {
	en, ok := c.m[pid]
	if ok {
		c.hits.Add(1)
	} else {
		c.misses.Add(1)
	}
	return en, ok
}

// store keeps pid's entry; only between begin and end.
func (c *exeCache) store(pid int32, en exeEntry) {
	if _, ok := c.m[pid]; !ok && len(c.m) >= c.max {
		// Exits keep the map to the live processes that open protected
		// files; past the bound, starting again is simpler than an LRU.
		clear(c.m)
	}
	c.m[pid] = en
}

// exeID is the identity of pid's executable, cached when the batch may
// use the cache.
func (e *Engine) exeID(pid int32, d *decision) devIno {
	if d.haveExeID {
		return d.exeID
	}
	d.haveExeID = true
	var en exeEntry
	ok := false
	if d.cached {
		en, ok = e.exes.lookup(pid)
	}
	if !ok {
		var st unix.Stat_t
		if e.proc.StatExe(pid, &st) == nil {
			en.id = devIno{st.Dev, st.Ino}
		}
		if d.cached && en.id != (devIno{}) {
			e.exes.store(pid, en)
		}
	}
	d.exeID = en.id
	return d.exeID
}

// exeNames returns pid's name (comm) and the base name of its
// executable, for name entries; cached like exeID. The views are valid
// until the next decision.
func (e *Engine) exeNames(pid int32, d *decision) (comm, base string) {
	var en exeEntry
	ok := false
	if d.cached {
		en, ok = e.exes.lookup(pid)
		ok = ok && en.names
	}
	if ok {
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
	if d.cached && len(raw) > 0 {
		if id := e.exeID(pid, d); id != (devIno{}) {
			en := exeEntry{id: id, names: true, base: strings.Clone(base)}
			en.commLen = uint8(copy(en.comm[:], comm))
			e.exes.store(pid, en)
		}
	}
	return comm, base
}
