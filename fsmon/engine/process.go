package engine

import (
	"sync"
	"unsafe"

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

// identify reads what an allow list matches, fresh for every decision:
// the executable (an exec changes it) and the name.
func (e *Engine) identify(g *group, pid int32) (exe, comm string) {
	exe, _ = e.proc.Exe(pid)
	exe = g.inside(exe)
	if st, err := e.proc.Stat(pid); err == nil {
		comm = st.Comm
	}
	return exe, comm
}

// process gathers the facts of pid for a report. exe and comm are used
// when known already.
func (e *Engine) process(g *group, pid int32, exe, comm string, known bool) fsmon.Process {
	p := fsmon.Process{PID: pid, UserID: -1}
	st, err := e.proc.Stat(pid)
	if err != nil {
		// Gone already: the pid is all there is.
		return p
	}
	p.ParentPID = st.PPID
	if !known {
		exe, _ = e.proc.Exe(pid)
		exe = g.inside(exe)
		comm = st.Comm
	}
	p.ExecutablePath, p.ExecutableName = exe, comm
	if f, ok := e.procs.get(pid, st.StartTime, exe); ok {
		p.CommandLine, p.UserID = f.cmdline, f.uid
		return p
	}
	f := procFacts{start: st.StartTime, exe: exe, uid: -1}
	f.cmdline, _ = e.proc.Cmdline(pid)
	if uid, err := e.proc.EUID(pid); err == nil {
		f.uid = uid
	}
	e.procs.put(pid, f)
	p.CommandLine, p.UserID = f.cmdline, f.uid
	return p
}

// unsafeString views b as a string without copying; the caller must not
// keep it past b's next change.
func unsafeString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
