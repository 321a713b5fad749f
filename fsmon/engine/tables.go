package engine

import (
	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// devIno identifies an inode (st_dev, st_ino): what a permission event's
// fd is looked up by, with one fstat.
type devIno struct {
	dev uint64
	ino uint64
}

// ruleRel is a rule and how a directory relates to it.
type ruleRel struct {
	rule *policy.Rule
	rel  policy.Relation
}

// dirEntry is a directory the engine marks or watches.
type dirEntry struct {
	id     devIno
	path   string   // as walked (the configured spelling), for reports
	real   string   // as the kernel names it (readlink of the fd)
	comps  []string // path split at "/"
	handle string   // fid key, to look up notification events
	rels   []ruleRel
	perm   fanotify.Mask // mask in the permission group
	notif  fanotify.Mask // mask in the notification group
	wd     int           // inotify watch, -1 when none
}

// covers returns the rules that cover the file called name in the
// directory.
func (d *dirEntry) covers(name string, out []*policy.Rule) []*policy.Rule {
	for _, rr := range d.rels {
		if rr.rel.Covers() && rr.rule.MatchName(rr.rel, name) {
			out = appendRule(out, rr.rule)
		}
	}
	return out
}

func appendRule(rs []*policy.Rule, r *policy.Rule) []*policy.Rule {
	for _, x := range rs {
		if x == r {
			return rs
		}
	}
	return append(rs, r)
}

// fileEntry is a covered file with inode marks.
type fileEntry struct {
	id     devIno
	path   string
	handle string
	rules  []*policy.Rule
	perm   fanotify.Mask
	notif  fanotify.Mask
}

// tables are what the event loops look events up in.
type tables struct {
	dirs          map[devIno]*dirEntry
	dirsByReal    map[string]*dirEntry
	dirsByHandle  map[string]*dirEntry
	files         map[devIno]*fileEntry
	filesByHandle map[string]*fileEntry
	wds           map[int]*dirEntry
}

func newTables() *tables {
	return &tables{
		dirs:          map[devIno]*dirEntry{},
		dirsByReal:    map[string]*dirEntry{},
		dirsByHandle:  map[string]*dirEntry{},
		files:         map[devIno]*fileEntry{},
		filesByHandle: map[string]*fileEntry{},
		wds:           map[int]*dirEntry{},
	}
}

func (t *tables) markCounts() map[fsmon.MarkType]int {
	m := map[fsmon.MarkType]int{}
	for _, mt := range fsmon.MarkTypes {
		m[mt] = 0
	}
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

// fidKey is the map key of a fid.
func fidKey(fsid [8]byte, typ int32, handle []byte) string {
	b := make([]byte, 0, 12+len(handle))
	b = append(b, fsid[:]...)
	b = append(b, byte(typ), byte(typ>>8), byte(typ>>16), byte(typ>>24))
	b = append(b, handle...)
	return string(b)
}
