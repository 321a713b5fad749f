package baseline

import (
	"sort"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// Change is one difference between a baseline and the files now: Op
// create (Before nil), delete (After nil), rename (another file took
// the name: a replacement), write (content: size, mtime or hash) or
// attrib (mode or owner only).
type Change struct {
	Path          string
	Op            fsmon.Op
	Before, After *Entry
}

// Diff compares the files of a baseline with the files now (both by
// path) and returns what differs, sorted by path. inForce are the
// filters of the configuration now. A file now that the baseline lacks
// is created only if its filter was in force when the baseline was
// written (else the configuration, not the file, is new); a file of the
// baseline that is gone is deleted only if its filter is still in
// force (else it is no longer watched).
func Diff(old *Baseline, now map[string]*Entry, inForce map[Filter]struct{}) []Change {
	var out []Change
	for p, a := range now {
		b, ok := old.Files[p]
		if !ok {
			if _, was := old.Filters[a.Filter]; was {
				out = append(out, Change{Path: p, Op: fsmon.OpCreate, After: a})
			}
			continue
		}
		if op := changeOp(b, a); op != 0 {
			out = append(out, Change{Path: p, Op: op, Before: b, After: a})
		}
	}
	for p, b := range old.Files {
		if _, ok := now[p]; ok {
			continue
		}
		if _, still := inForce[b.Filter]; still {
			out = append(out, Change{Path: p, Op: fsmon.OpDelete, Before: b})
		}
	}
	sortChanges(out)
	return out
}

// changeOp is what became of a file, 0 for nothing.
func changeOp(b, a *Entry) fsmon.Op {
	switch {
	case b.Dev != a.Dev || b.Ino != a.Ino:
		return fsmon.OpRename
	case ContentDiffers(&b.Facts, &a.Facts):
		return fsmon.OpWrite
	case b.Facts.Mode != a.Facts.Mode || b.Facts.UID != a.Facts.UID || b.Facts.GID != a.Facts.GID:
		return fsmon.OpAttrib
	}
	return 0
}

// ContentDiffers reports whether two facts of one file say its content
// changed: its size, its mtime, or its hash where both were computed.
func ContentDiffers(b, a *fsmon.FileFacts) bool {
	if b.Size != a.Size || !b.Mtime.Equal(a.Mtime) {
		return true
	}
	return b.Hash == fsmon.HashComputed && a.Hash == fsmon.HashComputed && b.SHA256 != a.SHA256
}

func sortChanges(cs []Change) {
	sort.Slice(cs, func(i, j int) bool { return cs[i].Path < cs[j].Path })
}
