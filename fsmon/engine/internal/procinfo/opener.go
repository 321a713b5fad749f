package procinfo

import (
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
)

// Reader reads what the event loops need to know of processes: for a
// permission decision, what the opener runs and is called (Opener); for
// a report, its facts (Report, Notified).
type Reader struct {
	fs    proc.FS
	cache *ExeCache
	procs *procCache
}

// NewReader reads processes through fs, with the executable cache c.
func NewReader(fs proc.FS, c *ExeCache) *Reader {
	return &Reader{fs: fs, cache: c, procs: newProcCache(4096)}
}

// Cache is the reader's executable cache.
func (r *Reader) Cache() *ExeCache { return r.cache }

// Opener is what one decision has learnt of the process that opened the
// file; each fact is read at most once. It is a value in the decision's
// facts, so the decision's one reset clears it; the buffers its views
// point into are Buffers, kept apart so that the reset does not clear
// 8 KiB per open.
type Opener struct {
	PID int32
	// Cached: the batch holds the executable cache (ExeCache.Begin).
	Cached bool

	entry      *Entry // once looked up (haveEntry)
	haveEntry  bool
	exeID      fsys.FileID
	haveExeID  bool
	stat       proc.StatView // view of Buffers.stat
	haveStat   bool
	handle     proc.Handle
	haveHandle bool
	loader     fsmon.LoaderEnv
	haveLoader bool
}

// Buffers are an Opener's scratch space.
type Buffers struct {
	exe  [unix.PathMax]byte
	link [unix.PathMax]byte // ExePath's, apart from the names' views into exe
	stat [1024]byte
	comm [16]byte
}

// entry returns the opener's cached entry, filling it on a miss; nil
// when the decision may not use the cache or the process cannot be
// cached. Once per decision, also when the process cannot be cached: a
// failed fill is not tried again by the next question of the decision.
func (r *Reader) entry(o *Opener) *Entry {
	if !o.Cached {
		return nil
	}
	if o.haveEntry {
		return o.entry
	}
	en := r.cache.Lookup(o.PID)
	if en == nil {
		en = r.cache.Fill(o.PID)
	}
	o.entry, o.haveEntry = en, true
	return en
}

// statOf reads /proc/PID/stat once per decision.
func (r *Reader) statOf(o *Opener, b *Buffers) (proc.StatView, bool) {
	if !o.haveStat {
		v, err := r.fs.ReadStat(o.PID, b.stat[:])
		if err != nil {
			return proc.StatView{}, false
		}
		o.stat, o.haveStat = v, true
	}
	return o.stat, true
}

// ExeID is the identity of the opener's executable; the zero FileID
// when it cannot be read.
func (r *Reader) ExeID(o *Opener) fsys.FileID {
	if o.haveExeID {
		return o.exeID
	}
	o.haveExeID = true
	if en := r.entry(o); en != nil {
		o.exeID = en.id
		return o.exeID
	}
	var st unix.Stat_t
	o.exeID = fsys.FileID{}
	if r.fs.StatExe(o.PID, &st) == nil {
		o.exeID = fsys.FileID{Dev: st.Dev, Ino: st.Ino}
	}
	return o.exeID
}

// ExeHandle is the file handle of the opener's executable
// (name_to_handle_at of /proc/PID/exe, following it), which tells an
// inode from a later one that got its number; the zero Handle when it
// cannot be had. With a cache entry it is read once per exec.
func (r *Reader) ExeHandle(o *Opener) proc.Handle {
	if o.haveHandle {
		return o.handle
	}
	o.haveHandle = true
	en := r.entry(o)
	if en != nil && en.haveHandle {
		o.handle = en.handle
		return o.handle
	}
	h, err := r.fs.ExeHandle(o.PID)
	if err != nil {
		return proc.Handle{}
	}
	o.handle = h
	if en != nil {
		en.handle, en.haveHandle = h, true
	}
	return h
}

// ExePath is /proc/PID/exe as the daemon reads it (without a
// " (deleted)" suffix); a view into b, valid until its next use.
func (r *Reader) ExePath(o *Opener, b *Buffers) string {
	x, err := r.fs.ReadExe(o.PID, b.link[:])
	if err != nil {
		return ""
	}
	return proc.View(x)
}

// LoaderEnv is what the opener's loader was told at its exec. With the
// exec program it is the record made in the kernel at exec, before the
// program ran. Without one (the cache off, the kernel unable to record
// it, the process started before the daemon, or another process of the
// same counter slot exec'd since) it is read from /proc/PID/environ,
// which the process can rewrite: that catches careless use only.
func (r *Reader) LoaderEnv(o *Opener) fsmon.LoaderEnv {
	if o.haveLoader {
		return o.loader
	}
	o.haveLoader = true
	en := r.entry(o)
	if en != nil && en.haveLoader {
		o.loader = en.loader
		return o.loader
	}
	o.loader = r.environLoader(o.PID)
	if en != nil {
		en.loader, en.haveLoader = o.loader, true
	}
	return o.loader
}

// environLoader reads it from /proc/PID/environ.
func (r *Reader) environLoader(pid int32) fsmon.LoaderEnv {
	var s fsmon.LoaderScan
	var buf [4096]byte
	truncated, err := r.fs.ScanEnviron(pid, buf[:], &s)
	if err != nil {
		return fsmon.LoaderUnreadable
	}
	if truncated {
		s.Env |= fsmon.LoaderTruncated
	}
	return s.Env
}

// Names returns the opener's name (comm) and the base name of its
// executable, for name entries. The views are valid until the buffers'
// next use.
func (r *Reader) Names(o *Opener, b *Buffers) (comm, base string) {
	en := r.entry(o)
	if en != nil && en.names {
		b.comm = en.comm
		return proc.View(b.comm[:en.commLen]), en.base
	}
	var raw []byte
	if x, err := r.fs.ReadExe(o.PID, b.exe[:]); err == nil {
		raw = x
	}
	base = proc.View(raw)
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	if v, ok := r.statOf(o, b); ok {
		comm = proc.View(v.Comm)
	}
	if en != nil && len(raw) > 0 {
		en.names = true
		en.commLen = uint8(copy(en.comm[:], comm))
		en.base = strings.Clone(base)
	}
	return comm, base
}

// Report gathers the opener's facts for a report, while it waits for
// its answer, so that they are complete even for a process that exits
// at its EPERM. The executable path is as the daemon sees it. With a
// cache entry, what stays with the program is read once per exec, and
// the parent and user come from the pidfd; without one, the command line
// and user are cached per (pid, start time, executable) and the rest is
// read every time. A process that makes these reads slow (its memory
// locked) holds up only its own decision: the watchdog and its stand-in
// reader answer the rest.
func (r *Reader) Report(o *Opener, b *Buffers) fsmon.Process {
	p := r.report(o, b)
	if o.haveLoader && o.loader.Refuses() {
		// Asked only when an executable entry matched: it is why the
		// entry did not count.
		p.LoaderEnv = o.loader
	}
	return p
}

func (r *Reader) report(o *Opener, b *Buffers) fsmon.Process {
	en := r.entry(o)
	if en != nil && en.report != nil {
		if in, err := en.pidfd.Info(); err == nil {
			f := en.report
			return fsmon.Process{PID: o.PID, ParentPID: in.PPID, ExecutablePath: f.exe,
				ExecutableName: f.comm, CommandLine: f.cmdline, UserID: in.EUID}
		}
	}
	raw := ""
	if x, err := r.fs.ReadExe(o.PID, b.exe[:]); err == nil {
		raw = string(x)
	}
	p := fsmon.Process{PID: o.PID, UserID: -1, ExecutablePath: raw}
	v, ok := r.statOf(o, b)
	if !ok {
		return p
	}
	p.ParentPID = v.PPID
	p.ExecutableName = string(v.Comm)
	p.CommandLine, p.UserID = r.cmdlineAndUser(o.PID, v.StartTime, raw)
	if en != nil && raw != "" {
		en.report = &reportFacts{exe: raw, comm: p.ExecutableName, cmdline: p.CommandLine}
	}
	return p
}

// Quick gathers the opener's facts that can be read without blocking,
// for a stand-in reader: its executable (the /proc/PID/exe link) and
// what /proc/PID/stat says (parent, name). The command line (its read
// takes the process's mmap_lock) and the user are left out, unknown.
// It does not touch the executable cache, whose entries the loop owns.
func (r *Reader) Quick(o *Opener, b *Buffers) fsmon.Process {
	p := fsmon.Process{PID: o.PID, UserID: -1}
	if x, err := r.fs.ReadExe(o.PID, b.exe[:]); err == nil {
		p.ExecutablePath = string(x)
	}
	if v, ok := r.statOf(o, b); ok {
		p.ParentPID = v.PPID
		p.ExecutableName = string(v.Comm)
	}
	return p
}

// Read gathers the facts of pid for a notification, read after the
// fact: the process may be gone already, then the pid is all there is.
// The executable path is as the daemon sees it.
func (r *Reader) Read(pid int32) fsmon.Process {
	p := fsmon.Process{PID: pid, UserID: -1}
	var sb [1024]byte
	v, err := r.fs.ReadStat(pid, sb[:])
	if err != nil {
		return p
	}
	p.ParentPID = v.PPID
	p.ExecutableName = string(v.Comm)
	var eb [unix.PathMax]byte
	if b, err := r.fs.ReadExe(pid, eb[:]); err == nil {
		p.ExecutablePath = string(b)
	}
	p.CommandLine, p.UserID = r.cmdlineAndUser(pid, v.StartTime, p.ExecutablePath)
	return p
}

func (r *Reader) cmdlineAndUser(pid int32, start uint64, exe string) (string, int64) {
	if f, ok := r.procs.get(pid, start, exe); ok {
		return f.cmdline, f.uid
	}
	f := procFacts{start: start, exe: exe, uid: -1}
	f.cmdline, _ = r.fs.Cmdline(pid)
	if uid, err := r.fs.EUID(pid); err == nil {
		f.uid = uid
	}
	r.procs.put(pid, f)
	return f.cmdline, f.uid
}

// Recent remembers the facts of the processes behind recent
// notifications for a moment: a writer makes many events in a row, and
// reading /proc for each would make the notification loop fall behind
// one core of writers. A pid cannot come round again within the moment;
// an exec within it is reported with the facts from before it (reports
// only: permission decisions never use this). It belongs to one loop.
type Recent struct {
	m map[int32]recentProc
}

type recentProc struct {
	p  fsmon.Process
	at time.Time
}

// RecentFor is how long Recent keeps a process's facts.
const RecentFor = 200 * time.Millisecond

// Get returns the facts of pid noted within RecentFor of now.
func (r *Recent) Get(pid int32, now time.Time) (fsmon.Process, bool) {
	x, ok := r.m[pid]
	if !ok || now.Sub(x.at) > RecentFor {
		return fsmon.Process{}, false
	}
	return x.p, true
}

// Put notes p's facts at now.
func (r *Recent) Put(p fsmon.Process, now time.Time) {
	if r.m == nil || len(r.m) >= 4096 {
		r.m = make(map[int32]recentProc, 256)
	}
	r.m[p.PID] = recentProc{p, now}
}
