package marks

import (
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// DevIno identifies an inode (st_dev, st_ino): what a permission event's
// fd is looked up by, with one fstat.
type DevIno struct {
	Dev, Ino uint64 // as fsys.FileID, which converts to it
}

// Rule is a rule as it applies to one group: the same filter of a
// profile that covers every container is one Rule per container.
type Rule struct {
	Group *group
	*policy.Rule
}

// ruleRel is a rule and how a directory relates to it.
type ruleRel struct {
	rule Rule
	rel  policy.Relation
}

// Dir is a directory the engine marks or watches.
type Dir struct {
	g      *group // whose walk found it: paths are in its root
	id     DevIno
	path   string   // as walked (the configured spelling), for reports
	real   string   // as the kernel names it (readlink of the fd)
	mnt    uint64   // mount id, with real the key of dirsByReal
	comps  []string // path split at "/"
	handle string   // fid key, to look up notification events
	rels   []ruleRel
	perm   fanotify.Mask // mask in the permission group
	notif  fanotify.Mask // mask in the notification group
	wd     int           // inotify watch, -1 when none
	// rehomed: renamed within the covered tree and already followed to
	// its new place; the IN_MOVE_SELF that comes after is not a loss.
	rehomed bool
	// goneAt: when the directory went; only its handle is still known.
	goneAt time.Time
}

// covers returns the rules that cover the file called name in the
// directory.
func (d *Dir) covers(name string, out []Rule) []Rule {
	for _, rr := range d.rels {
		if rr.rel.Covers() && rr.rule.MatchName(rr.rel, name) {
			out = appendRule(out, rr.rule)
		}
	}
	return out
}

func appendRule(rs []Rule, r Rule) []Rule {
	for _, x := range rs {
		if x == r {
			return rs
		}
	}
	return append(rs, r)
}

// fileEntry is a covered file with inode marks.
type fileEntry struct {
	g      *group
	id     DevIno
	path   string
	handle string
	rules  []Rule
	perm   fanotify.Mask
	notif  fanotify.Mask
	// guard is the content guard of the permission mark (guard.go),
	// GuardNone when no rule asks for one or placing it failed.
	guard fanotify.Guard
}

// RealKey names a directory as the kernel does for an event fd: its
// path in the daemon's view and the mount it is on. The path alone is
// not enough: a container's /etc and the host's both read "/etc" when
// the container's mount is not in the daemon's namespace.
type RealKey struct {
	Mnt  uint64
	Path string
}

// mountFD is a directory fd on one file system, for open_by_handle_at,
// and the group whose walk opened it.
type mountFD struct {
	fd int
	g  *group
}

// Tables are what the event loops look events up in: the set in force,
// or one a reload builds.
type Tables struct {
	dirs          map[DevIno]*Dir
	dirsByReal    map[RealKey]*Dir
	dirsByHandle  map[string]*Dir
	files         map[DevIno]*fileEntry
	filesByHandle map[string]*fileEntry
	wds           map[int]*Dir
	// owned counts the directories and files each container's walks
	// and new files brought in (the host's are not counted): what its
	// object budget bounds.
	owned map[*group]int
	// incomplete: something the configuration asks for could not be
	// placed into this set (see walker.fail).
	incomplete bool
}

func newTables() *Tables {
	return &Tables{
		dirs:          map[DevIno]*Dir{},
		dirsByReal:    map[RealKey]*Dir{},
		dirsByHandle:  map[string]*Dir{},
		files:         map[DevIno]*fileEntry{},
		filesByHandle: map[string]*fileEntry{},
		wds:           map[int]*Dir{},
		owned:         map[*group]int{},
	}
}

// own counts a new entry of g's; disown one that goes.
func (t *Tables) own(g *group) {
	if !g.IsHost() {
		t.owned[g]++
	}
}

func (t *Tables) disown(g *group) {
	if n := t.owned[g]; n > 1 {
		t.owned[g] = n - 1
	} else {
		delete(t.owned, g)
	}
}

// Len is how many directories and files the set holds.
func (t *Tables) Len() (dirs, files int) { return len(t.dirs), len(t.files) }

// zeroMarks is a count of no marks of each type.
func zeroMarks() map[fsmon.MarkType]int {
	m := map[fsmon.MarkType]int{}
	for _, mt := range fsmon.MarkTypes {
		m[mt] = 0
	}
	return m
}

// markCounts counts the marks of every group.
func (t *Tables) markCounts() map[fsmon.MarkType]int {
	m := zeroMarks()
	for _, d := range t.dirs {
		if d.perm != 0 {
			m[fsmon.MarkDir]++
		}
		if d.notif != 0 {
			m[fsmon.MarkDir]++
		}
	}
	for _, f := range t.files {
		if f.perm != 0 {
			m[fsmon.MarkFile]++
		}
		if f.notif != 0 {
			m[fsmon.MarkFile]++
		}
	}
	return m
}

// groupCounts counts marks and watches per group in one pass.
func (t *Tables) groupCounts() map[*group]fsmon.GroupState {
	out := map[*group]fsmon.GroupState{}
	get := func(g *group) fsmon.GroupState {
		s, ok := out[g]
		if !ok {
			s.Marks = zeroMarks()
		}
		return s
	}
	for _, d := range t.dirs {
		s := get(d.g)
		if d.perm != 0 {
			s.Marks[fsmon.MarkDir]++
		}
		if d.notif != 0 {
			s.Marks[fsmon.MarkDir]++
		}
		if d.wd >= 0 {
			s.InotifyWatches++
		}
		out[d.g] = s
	}
	for _, f := range t.files {
		s := get(f.g)
		if f.perm != 0 {
			s.Marks[fsmon.MarkFile]++
		}
		if f.notif != 0 {
			s.Marks[fsmon.MarkFile]++
		}
		out[f.g] = s
	}
	return out
}

// fidKey is the map key of a fid.
func fidKey(fsid [8]byte, typ int32, handle []byte) string {
	b := make([]byte, 0, 12+len(handle))
	b = append(b, fsid[:]...)
	b = append(b, byte(typ), byte(typ>>8), byte(typ>>16), byte(typ>>24))
	b = append(b, handle...)
	return string(b)
}
