package engine

import (
	"errors"
	"log/slog"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/procinfo"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
)

// Who made a change, and who opened a file: the process, its user and
// its parent (docs/design/process.md).

// syncWait bounds how long a change waits for the process table to
// catch up with the kernel's records (procinfo.Table.Sync): past it the
// change is reported with what the table has. Tests that hold the table
// back lengthen it (Engine.syncWait).
const syncWait = 100 * time.Millisecond

// newProcessTable loads the process table, or says once why reports
// read /proc instead.
func newProcessTable(log *slog.Logger, fs proc.FS, opts Options, onExec func(int32, uint64)) *procinfo.Table {
	if opts.ProcessTable == ProcessTableOff {
		log.Info("process table off (--process.table=off): changes of processes that have exited are reported by their pid only")
		return nil
	}
	size := opts.ProcessTableSize
	if size <= 0 {
		size = 16384
	}
	t, err := procinfo.NewTable(log, fs, procinfo.TableOptions{Size: size, Retention: opts.ExitedRetention, OnExec: onExec})
	if err != nil {
		if !errors.Is(err, procinfo.ErrTableOff) {
			log.Warn("process table unavailable: reports read /proc, and changes of processes that have exited are reported by their pid only", "err", err)
		}
		return nil
	}
	log.Info("process table on: execs, forks and exits recorded by BPF programs", "size", size)
	return t
}

func (e *Engine) processTableState() *fsmon.ProcessTableState {
	if e.procs == nil {
		return nil
	}
	s := e.procs.Stats()
	return &fsmon.ProcessTableState{Records: s.Records, Size: s.Size, Evictions: s.Evictions, Lost: s.Lost}
}

// groupOfNS is the group of a mount namespace: a container's, else the
// host's (as groupOf).
func (e *Engine) groupOfNS(ns uint64) *group {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if g := e.groups[ns]; g != nil {
		return g
	}
	return e.host
}

// processOf gathers the facts of pid for a notification of group g's
// file. From the process table first: the kernel recorded them at the
// process's exec or fork, so they are there after it has exited, and
// the table has applied every record written before the event was read
// (Sync). Without a record, from /proc: a process gone by then is its
// pid only.
func (e *Engine) processOf(g *group, pid int32, now time.Time) fsmon.Process {
	if e.procs != nil {
		e.procs.Sync(time.Duration(e.syncWait.Load()))
		if r, ok := e.procs.Get(pid); ok {
			// A writer makes many changes in a row: its report is kept
			// for a moment, while its record stays the same one (no
			// exec, fork or exit of the pid since).
			if p, ok := e.recentRec.get(&r, now); ok {
				return p
			}
			p := e.fromRecord(&r, g)
			e.recentRec.put(&r, p, now)
			return p
		}
	}
	if p, ok := e.recent.Get(pid, now); ok {
		return p
	}
	p := e.who.Read(pid)
	pg := g
	if p.ExecutableName != "" {
		// Alive: its own group names its user.
		pg = e.groupOfProcess(pid)
	}
	p.ExecutablePath = pg.Inside(p.ExecutablePath)
	e.completeProcess(pg, &p)
	if p.ExecutablePath != "" {
		e.recent.Put(p, now)
	}
	return p
}

// groupOfProcess is groupOf, also where no container groups exist.
func (e *Engine) groupOfProcess(pid int32) *group {
	if !e.containers.Load() {
		return e.host
	}
	return e.groupOf(pid)
}

// fromRecord is the report of a process the table has a record of:
// its paths as its own group sees them, its user named by that group's
// /etc/passwd.
func (e *Engine) fromRecord(r *procinfo.Proc, g *group) fsmon.Process {
	pg := g
	if r.MntNS != 0 {
		pg = e.groupOfNS(r.MntNS)
	}
	p := fsmon.Process{PID: r.PID, ParentPID: r.PPID, ExecutableName: r.Comm, CommandLine: r.Cmdline, UserID: r.UID}
	if !r.Exited {
		// A process can change its uid without an exec (a daemon's
		// worker dropping privileges), which no tracepoint reports:
		// while it runs, its uid now is the one it wrote as.
		if uid, err := e.proc.EUID(r.PID); err == nil {
			p.UserID = uid
		}
	}
	p.ExecutablePath = e.exePath(pg, r.Exe, r.ExecPath, func() string { return e.procs.ResolveExe(r, pg.RootFD) })
	p.UserName = e.users.Name(pg.NS, pg.RootFD, p.UserID)
	par := r.Parent
	if par.Comm == "" && r.PPID > 0 {
		// Not known when the process was recorded: what the table knows
		// of the parent now, else /proc.
		if q, ok := e.procs.Get(r.PPID); ok {
			par = q.AsParent()
		} else {
			e.parentFromProc(pg, &p)
			return p
		}
	}
	ppg := pg
	if par.MntNS != 0 {
		ppg = e.groupOfNS(par.MntNS)
	}
	p.ParentExecutablePath = e.exePath(ppg, par.Exe, par.ExecPath, func() string { return e.procs.ResolveParent(&par, ppg.RootFD) })
	p.ParentExecutableName, p.ParentCommandLine = par.Comm, par.Cmdline
	return p
}

// exePath is an executable as group g sees it: exe (the daemon's view),
// else what resolve finds, else the path exec'd as the process gave it.
func (e *Engine) exePath(g *group, exe, exec string, resolve func() string) string {
	if exe == "" && resolve != nil {
		exe = resolve()
	}
	if exe != "" {
		return g.Inside(exe)
	}
	return exec
}

// completeProcess adds to p, read from /proc or while it waits for its
// answer, its user's name (in group g's /etc/passwd) and its parent: from
// the process table, else from /proc.
func (e *Engine) completeProcess(g *group, p *fsmon.Process) {
	p.UserName = e.users.Name(g.NS, g.RootFD, p.UserID)
	if p.ParentPID > 0 && !e.parentFromTable(g, p) {
		e.parentFromProc(g, p)
	}
}

// parentFromTable fills p's parent from the process table's record of
// it, and reports whether there was one: memory only, nothing that can
// block, so stand-in readers use it too.
func (e *Engine) parentFromTable(g *group, p *fsmon.Process) bool {
	if e.procs == nil || p.ParentPID <= 0 {
		return false
	}
	q, ok := e.procs.Get(p.ParentPID)
	if !ok || q.Exited {
		return false
	}
	par := q.AsParent()
	ppg := g
	if par.MntNS != 0 {
		ppg = e.groupOfNS(par.MntNS)
	}
	p.ParentExecutablePath = e.exePath(ppg, par.Exe, par.ExecPath, func() string { return e.procs.ResolveParent(&par, ppg.RootFD) })
	p.ParentExecutableName, p.ParentCommandLine = par.Comm, par.Cmdline
	return true
}

// parentFromProc reads p's parent from /proc.
func (e *Engine) parentFromProc(g *group, p *fsmon.Process) {
	q := e.who.Read(p.ParentPID)
	p.ParentExecutablePath = g.Inside(q.ExecutablePath)
	p.ParentExecutableName, p.ParentCommandLine = q.ExecutableName, q.CommandLine
}

// recentRecords keeps the reports made from table records for
// procinfo.RecentFor, for the notification loop alone: reading the uid
// and naming the user for every change of a stream of writes would slow
// the loop. A report is used again only while its record is the same
// (its kernel record number and its exit unchanged).
type recentRecords struct {
	m map[int32]recentRecord
}

type recentRecord struct {
	seq, start uint64
	exited     bool
	p          fsmon.Process
	at         time.Time
}

func (c *recentRecords) get(r *procinfo.Proc, now time.Time) (fsmon.Process, bool) {
	x, ok := c.m[r.PID]
	if !ok || x.seq != r.Seq || x.start != r.Start || x.exited != r.Exited || now.Sub(x.at) > procinfo.RecentFor {
		return fsmon.Process{}, false
	}
	return x.p, true
}

func (c *recentRecords) put(r *procinfo.Proc, p fsmon.Process, now time.Time) {
	if c.m == nil || len(c.m) >= 4096 {
		c.m = make(map[int32]recentRecord, 256)
	}
	c.m[r.PID] = recentRecord{seq: r.Seq, start: r.Start, exited: r.Exited, p: p, at: now}
}
