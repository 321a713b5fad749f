package engine

import (
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// devIno identifies an inode (st_dev, st_ino): what a permission event's
// fd is looked up by, with one fstat.
type devIno struct {
	Dev, Ino uint64 // as fsys.FileID, which converts to it
}

// grule is a rule as it applies to one group: the same filter of a
// profile that covers every container is one grule per container.
type grule struct {
	g *group
	*policy.Rule
}

// ruleRel is a rule and how a directory relates to it.
type ruleRel struct {
	rule grule
	rel  policy.Relation
}

// dirEntry is a directory the engine marks or watches.
type dirEntry struct {
	g      *group // whose walk found it: paths are in its root
	id     devIno
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
func (d *dirEntry) covers(name string, out []grule) []grule {
	for _, rr := range d.rels {
		if rr.rel.Covers() && rr.rule.MatchName(rr.rel, name) {
			out = appendRule(out, rr.rule)
		}
	}
	return out
}

func appendRule(rs []grule, r grule) []grule {
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
	id     devIno
	path   string
	handle string
	rules  []grule
	perm   fanotify.Mask
	notif  fanotify.Mask
}

// realKey names a directory as the kernel does for an event fd: its
// path in the daemon's view and the mount it is on. The path alone is
// not enough: a container's /etc and the host's both read "/etc" when
// the container's mount is not in the daemon's namespace.
type realKey struct {
	mnt  uint64
	path string
}

// mountFD is a directory fd on one file system, for open_by_handle_at,
// and the group whose walk opened it.
type mountFD struct {
	fd int
	g  *group
}

// tables are what the event loops look events up in.
type tables struct {
	dirs          map[devIno]*dirEntry
	dirsByReal    map[realKey]*dirEntry
	dirsByHandle  map[string]*dirEntry
	files         map[devIno]*fileEntry
	filesByHandle map[string]*fileEntry
	wds           map[int]*dirEntry
}

func newTables() *tables {
	return &tables{
		dirs:          map[devIno]*dirEntry{},
		dirsByReal:    map[realKey]*dirEntry{},
		dirsByHandle:  map[string]*dirEntry{},
		files:         map[devIno]*fileEntry{},
		filesByHandle: map[string]*fileEntry{},
		wds:           map[int]*dirEntry{},
	}
}

// markCounts counts the marks of group g, or of every group when g is
// nil.
func (t *tables) markCounts(g *group) map[fsmon.MarkType]int {
	m := map[fsmon.MarkType]int{}
	for _, mt := range fsmon.MarkTypes {
		m[mt] = 0
	}
	for _, d := range t.dirs {
		if g != nil && d.g != g {
			continue
		}
		if d.perm != 0 {
			m[fsmon.MarkDir]++
		}
		if d.notif != 0 {
			m[fsmon.MarkDir]++
		}
	}
	for _, f := range t.files {
		if g != nil && f.g != g {
			continue
		}
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
func (t *tables) groupCounts() map[*group]fsmon.GroupState {
	out := map[*group]fsmon.GroupState{}
	get := func(g *group) fsmon.GroupState {
		s, ok := out[g]
		if !ok {
			s.Marks = map[fsmon.MarkType]int{}
			for _, mt := range fsmon.MarkTypes {
				s.Marks[mt] = 0
			}
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
