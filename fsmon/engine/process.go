package engine

import (
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// procCache keeps the facts of a process that are dear to read
// (command line, user) per (pid, start time, executable): the pid alone
// is reused, and an exec changes the executable but not the start time.
type procCache struct {
	mu  sync.Mutex
	max int
	m   map[int32]procFacts
}

type procFacts struct {
	start   uint64
	exe     string
	cmdline string
	uid     int64
}

func newProcCache(max int) *procCache {
	return &procCache{max: max, m: make(map[int32]procFacts, max)}
}

func (c *procCache) get(pid int32, start uint64, exe string) (procFacts, bool) {
	c.mu.Lock()
	f, ok := c.m[pid]
	c.mu.Unlock()
	return f, ok && f.start == start && f.exe == exe
}

func (c *procCache) put(pid int32, f procFacts) {
	c.mu.Lock()
	if len(c.m) >= c.max {
		// Dropping everything is simpler than an LRU and, with pids
		// coming back round, about as good.
		clear(c.m)
	}
	c.m[pid] = f
	c.mu.Unlock()
}

// process gathers the facts of pid for a report of a permission event
// while it waits for the answer, so that they are complete even for a
// process that exits at its EPERM; exe is known already. The command
// line and user are cached per (pid, start time, executable). A process
// that makes these reads slow (its memory locked) holds up only its own
// decision: the watchdog and its stand-in reader answer the rest.
func (e *Engine) process(pid int32, exe string, d *decision) fsmon.Process {
	p := fsmon.Process{PID: pid, UserID: -1, ExecutablePath: exe}
	v, ok := e.stat(pid, d)
	if !ok {
		return p
	}
	p.ParentPID = v.PPID
	p.ExecutableName = string(v.Comm)
	p.CommandLine, p.UserID = e.cmdlineAndUser(pid, v.StartTime, exe)
	return p
}

// recentProcs remembers the facts of the processes behind recent
// notifications for a moment: a writer makes many events in a row, and
// reading /proc for each would make the notification loop fall behind
// one core of writers. A pid cannot come round again within the moment;
// an exec within it is reported with the facts from before it (reports
// only: permission decisions never use this).
type recentProcs struct {
	m map[int32]recentProc
}

type recentProc struct {
	p  fsmon.Process
	at time.Time
}

const recentFor = 200 * time.Millisecond

func (r *recentProcs) get(pid int32, now time.Time) (fsmon.Process, bool) {
	x, ok := r.m[pid]
	if !ok || now.Sub(x.at) > recentFor {
		return fsmon.Process{}, false
	}
	return x.p, true
}

func (r *recentProcs) put(p fsmon.Process, now time.Time) {
	if r.m == nil || len(r.m) >= 4096 {
		r.m = make(map[int32]recentProc, 256)
	}
	r.m[p.PID] = recentProc{p, now}
}

// processOf gathers the facts of pid for a notification: the process may
// be gone already, then the pid is all there is.
func (e *Engine) processOf(g *group, pid int32, now time.Time) fsmon.Process {
	if p, ok := e.recent.get(pid, now); ok {
		return p
	}
	p := e.readProcess(g, pid)
	if p.ExecutablePath != "" {
		e.recent.put(p, now)
	}
	return p
}

func (e *Engine) readProcess(g *group, pid int32) fsmon.Process {
	p := fsmon.Process{PID: pid, UserID: -1}
	var sb [1024]byte
	v, err := e.proc.ReadStat(pid, sb[:])
	if err != nil {
		return p
	}
	p.ParentPID = v.PPID
	p.ExecutableName = string(v.Comm)
	var eb [unix.PathMax]byte
	if b, err := e.proc.ReadExe(pid, eb[:]); err == nil {
		p.ExecutablePath = g.inside(string(b))
	}
	p.CommandLine, p.UserID = e.cmdlineAndUser(pid, v.StartTime, p.ExecutablePath)
	return p
}

func (e *Engine) cmdlineAndUser(pid int32, start uint64, exe string) (string, int64) {
	if f, ok := e.procs.get(pid, start, exe); ok {
		return f.cmdline, f.uid
	}
	f := procFacts{start: start, exe: exe, uid: -1}
	f.cmdline, _ = e.proc.Cmdline(pid)
	if uid, err := e.proc.EUID(pid); err == nil {
		f.uid = uid
	}
	e.procs.put(pid, f)
	return f.cmdline, f.uid
}

// unsafeString views b as a string without copying; the caller must not
// keep it past b's next change.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
