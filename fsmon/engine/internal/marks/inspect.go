package marks

import (
	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
)

// What the engine's tests look at. The package is internal to the
// engine, so these are not API of the module; nothing outside the tests
// calls them.

// Entry is a copy of what the tables in force hold of one directory or
// file.
type Entry struct {
	Type        fsmon.MarkType // MarkDir or MarkFile
	Group       *group         // whose walk found it
	Path        string         // as walked
	Perm, Notif fanotify.Mask  // placed in the permission and notification groups
}

func dirEntry(d *Dir) *Entry {
	return &Entry{Type: fsmon.MarkDir, Group: d.g, Path: d.path, Perm: d.perm, Notif: d.notif}
}

func fileEntryOf(f *fileEntry) *Entry {
	return &Entry{Type: fsmon.MarkFile, Group: f.g, Path: f.path, Perm: f.perm, Notif: f.notif}
}

// Entries returns copies of the file and directory entries of id, nil
// for what the tables do not hold.
func (m *Marks) Entries(id DevIno) (file, dir *Entry) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if f := m.tables.files[id]; f != nil {
		file = fileEntryOf(f)
	}
	if d := m.tables.dirs[id]; d != nil {
		dir = dirEntry(d)
	}
	return file, dir
}

// EachEntry calls fn with a copy of every entry of the tables in force,
// under the tables' lock (fn must not call into m).
func (m *Marks) EachEntry(fn func(*Entry)) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, d := range m.tables.dirs {
		fn(dirEntry(d))
	}
	for _, f := range m.tables.files {
		fn(fileEntryOf(f))
	}
}
