// Package marks places the engine's marks and keeps them: the tables the
// event loops look files and directories up in, the walks that fill them
// from a policy's rules, the fanotify marks and inotify watches placed
// on what they find, and the upkeep as the tree changes (new files and
// directories get marks, directories that go lose theirs).
//
// A Marks owns its state and its two locks. The tables' lock is held
// only for map work, never across a system call, so the permission
// loop's look-ups (FileRules, DirRules) never wait for a walk. The
// placement lock serialises what changes which marks are placed: a
// reload, a tree event, a walk after an overflow, a container found or
// gone. Those operations are methods of Placement, which only Place
// hands out, so none of them can run without it.
package marks

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/groups"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/inotify"
)

// group is the host or one container.
type group = groups.Group

// Options are what a Marks places its marks with.
type Options struct {
	Logger *slog.Logger
	// Perm and Notif are the engine's permission and notification
	// groups; Ino its inotify instance. The engine owns and closes them.
	Perm, Notif *fanotify.Group
	Ino         *inotify.Instance
	// Arm is the arming group (its own group: see guard.go), nil when
	// file systems are not to be armed.
	Arm *fanotify.Group
	// MaxObjects bounds the directories and files tracked (see
	// engine.Options).
	MaxObjects int
	// GroupBudget bounds the directories and files of each container
	// (0: no bound but MaxObjects; see walker.overBudget).
	GroupBudget int
	// PassAge is how long a file beside a protected one must be left
	// unchanged before its opens are let past the daemon (neighbour.go);
	// 0 is DefaultPassAge, negative never.
	PassAge time.Duration
}

// Marks is the engine's marks, their tables and their upkeep.
type Marks struct {
	log         *slog.Logger
	perm, notif *fanotify.Group
	ino         *inotify.Instance
	maxObjects  int
	groupBudget int

	// applyMu serialises placement (see Placement).
	applyMu sync.Mutex
	// adoptHook, set by tests (SetAdoptHook), runs in Adopt between the
	// marks and the table insert: the window a group's end can fall in.
	adoptHook atomic.Pointer[func()]
	// mu guards the tables in force and mountFDs.
	mu     sync.RWMutex
	tables *Tables
	// mountFDs holds one directory fd per file system, for
	// open_by_handle_at of fids the tables do not know.
	mountFDs map[[8]byte]mountFD

	ready    atomic.Bool
	unmarked atomic.Int64 // objects of the configuration in force that could not be marked
	// budgetCut: objects of containers not marked because their
	// group's budget was full, since the configuration was applied.
	budgetCut atomic.Int64

	// armGroup arms file systems (nil: off); armMu guards armed, the
	// file systems armed by st_dev, and toldNoPre, those the log has
	// said have no pre-content events.
	armGroup  *fanotify.Group
	armMu     sync.Mutex
	armed     map[uint64]armedFS
	toldNoPre map[uint64]struct{}
	warns     sync.WaitGroup // noPreContent's log lines being written

	// seq is the placement sequence (neighbour.go): odd while placement
	// is held. passed counts the passes placed; passErr says the log
	// has told a pass failed.
	seq     atomic.Uint64
	passed  atomic.Uint64
	passErr atomic.Bool
	passAge time.Duration
}

// New makes an empty Marks: nothing placed, not ready.
func New(opts Options) *Marks {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.PassAge == 0 {
		opts.PassAge = DefaultPassAge
	}
	return &Marks{
		log:         opts.Logger,
		perm:        opts.Perm,
		notif:       opts.Notif,
		ino:         opts.Ino,
		maxObjects:  opts.MaxObjects,
		groupBudget: opts.GroupBudget,
		tables:      newTables(),
		mountFDs:    map[[8]byte]mountFD{},
		armGroup:    opts.Arm,
		armed:       map[uint64]armedFS{},
		toldNoPre:   map[uint64]struct{}{},
		passAge:     opts.PassAge,
	}
}

// Ready reports whether every mark of the configuration in force is
// placed.
func (m *Marks) Ready() bool { return m.ready.Load() }

// Unmarked is how many objects of the configuration in force could not
// be marked.
func (m *Marks) Unmarked() int64 { return m.unmarked.Load() }

// BudgetCut is how many objects of containers were not marked because
// their group's budget was full (walker.overBudget).
func (m *Marks) BudgetCut() int64 { return m.budgetCut.Load() }

// Close closes the directory fds kept per file system: they would keep
// the file systems busy (an unmount fails with EBUSY) after the engine
// has stopped.
func (m *Marks) Close() {
	m.warns.Wait()
	m.closeArmed()
	m.mu.Lock()
	defer m.mu.Unlock()
	for fsid, mfd := range m.mountFDs {
		unix.Close(mfd.fd)
		delete(m.mountFDs, fsid)
	}
}

// Placement is the placement lock, held. The operations that change
// which marks are placed are its methods.
type Placement struct{ m *Marks }

// Place waits for the placement lock. Done releases it.
func (m *Marks) Place() Placement {
	m.applyMu.Lock()
	m.seq.Add(1)
	return Placement{m}
}

// SetAdoptHook makes f run in every Adopt after its marks are placed and
// before its table entry is made (nil: none). For tests only: it is the
// window in which a container's group can end (DropGroup).
func (m *Marks) SetAdoptHook(f *func()) { m.adoptHook.Store(f) }

// TryPlace takes the placement lock if it is free.
func (m *Marks) TryPlace() (Placement, bool) {
	if !m.applyMu.TryLock() {
		return Placement{}, false
	}
	m.seq.Add(1)
	return Placement{m}, true
}

// Done releases the placement lock.
func (p Placement) Done() {
	p.m.seq.Add(1)
	p.m.applyMu.Unlock()
}

// FileRules appends the rules of the marked file id. It runs on the
// permission loop for every open: one map look-up under a read lock.
func (m *Marks) FileRules(id DevIno, rules []Rule) []Rule {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if f := m.tables.files[id]; f != nil {
		rules = append(rules, f.rules...)
	}
	return rules
}

// FilePath is the path the marked file id was found at (its
// directory's path as walked and its name), "" when it is not marked:
// for reports when the kernel cannot name the file (beyond PATH_MAX).
func (m *Marks) FilePath(id DevIno) string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if f := m.tables.files[id]; f != nil {
		return f.path
	}
	return ""
}

// DirRules appends the rules that cover name in the marked directory
// dir, and returns the directory when any does.
func (m *Marks) DirRules(dir RealKey, name string, rules []Rule) ([]Rule, *Dir) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	de := m.tables.dirsByReal[dir]
	if de == nil {
		return rules, nil
	}
	n := len(rules)
	rules = de.covers(name, rules)
	if len(rules) == n {
		return rules, nil
	}
	return rules, de
}

// Changed appends the rules that cover a change the notification group
// reported of the entry name in the directory fid dir, or of the file
// fid file, and returns the path to report it at. A covered file reached
// through a link elsewhere (or an event of the inode alone, a link count
// change) is looked for where it is now: the path noted when it was
// marked may be stale (a parent renamed since).
func (m *Marks) Changed(dir, file fanotify.FID, name string, rules []Rule) ([]Rule, string) {
	var kb [160]byte
	var p string
	m.mu.RLock()
	var d *Dir
	if dir.Valid() {
		d = m.tables.dirsByHandle[string(keyBuf(kb[:0], dir))]
	}
	if d != nil && name != "" {
		rules = d.covers(name, rules)
		p = join(d.path, name)
	}
	var f *fileEntry
	if len(rules) == 0 && file.Valid() {
		// Not through a directory we mark: a covered file reached by
		// another link.
		if f = m.tables.filesByHandle[string(keyBuf(kb[:0], file))]; f != nil {
			rules = append(rules, f.rules...)
		}
	}
	m.mu.RUnlock()
	if len(rules) == 0 || f == nil {
		return rules, p
	}
	p = f.path
	if dp := m.resolveFID(dir); dp != "" && name != "" {
		p = f.g.Inside(join(dp, name))
	} else if fp := m.resolveFID(file); fp != "" {
		p = f.g.Inside(fp)
	}
	return rules, p
}

// ForgetFile forgets the file whose fid the notification group says is
// gone for good (FAN_DELETE_SELF: the last link is gone and the inode
// freed), so that a file that gets its number later does not inherit
// its rules.
func (m *Marks) ForgetFile(fid fanotify.FID) {
	var kb [160]byte
	key := keyBuf(kb[:0], fid)
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.tables.filesByHandle[string(key)]
	if f == nil {
		return
	}
	delete(m.tables.filesByHandle, f.handle)
	if m.tables.files[f.id] == f {
		delete(m.tables.files, f.id)
		m.tables.disown(f.g)
	}
}

// keyBuf builds a fid key without allocating; map lookups with
// string(keyBuf) do not allocate either.
func keyBuf(buf []byte, f fanotify.FID) []byte {
	buf = append(buf[:0], f.FSID[:]...)
	t := f.HandleType
	buf = append(buf, byte(t), byte(t>>8), byte(t>>16), byte(t>>24))
	return append(buf, f.Handle...)
}

// Counts are the marks and watches in force, for the engine's
// Snapshot.
type Counts struct {
	Total   map[fsmon.MarkType]int
	Watches int
	groups  map[*group]fsmon.GroupState
}

// Group returns g's marks and inotify watches.
func (c Counts) Group(g *group) fsmon.GroupState {
	if s, ok := c.groups[g]; ok {
		return s
	}
	return fsmon.GroupState{Marks: zeroMarks()}
}

// Counts counts the marks and watches in force.
func (m *Marks) Counts() Counts {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return Counts{Total: m.tables.markCounts(), Watches: len(m.tables.wds), groups: m.tables.groupCounts()}
}
