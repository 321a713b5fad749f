// Package allowstate keeps, across restarts of the daemon, what the
// executables named by allow lists resolved to (docs/design/deny.md §6).
//
// An allow entry allows the program its path names now and the builds
// it named before that still run: a package upgrade renames a new
// binary over the old one, and the processes of the old build keep
// their access until they exit. Only a daemon that saw the path name the
// old build knows it. When the daemon restarts (an upgrade of the daemon
// itself in the same package run, a crash) after the path changed,
// those records are what keeps the old build's processes allowed. They
// are kept in a small file under --state.dir.
//
// A record allows nothing by itself: a process matches one only if its
// executable's file handle (inode and generation) is the recorded one,
// so a record of a file that is gone, or one copied from another
// machine, matches no process.
package allowstate

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"sort"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/statefile"
)

// FileName is the state file's name in the state directory.
const FileName = "allow-resolutions.json"

const (
	version = 1
	// MaxBytes bounds the file: far above what maxEntries records take.
	MaxBytes = 4 << 20
	// MaxEntries and MaxPerEntry bound what is kept: entries of allow
	// lists, and resolutions of each (the current one and the former
	// ones the engine keeps).
	MaxEntries  = 4096
	MaxPerEntry = 9
)

// Resolution is one file an entry's path resolved to.
type Resolution struct {
	Dev, Ino uint64
	Handle   proc.Handle
}

// Entries maps an allow entry's path (in the host's root) to what it
// resolved to, newest first.
type Entries map[string][]Resolution

type fileJSON struct {
	Version int         `json:"version"`
	Entries []entryJSON `json:"entries"`
}

type entryJSON struct {
	Path        string    `json:"path"`
	Resolutions []resJSON `json:"resolutions"`
}

type resJSON struct {
	Dev        uint64 `json:"dev"`
	Ino        uint64 `json:"ino"`
	HandleType int32  `json:"handle_type"`
	Handle     string `json:"handle"` // hex
}

// Encode is the file's content for e, entries sorted by path so that
// equal states give equal files.
func Encode(e Entries) []byte {
	f := fileJSON{Version: version, Entries: []entryJSON{}}
	paths := make([]string, 0, len(e))
	for p := range e {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		ej := entryJSON{Path: p}
		for _, r := range e[p] {
			ej.Resolutions = append(ej.Resolutions, resJSON{
				Dev: r.Dev, Ino: r.Ino, HandleType: r.Handle.Type,
				Handle: hex.EncodeToString(r.Handle.B[:r.Handle.Len]),
			})
		}
		f.Entries = append(f.Entries, ej)
	}
	b, _ := json.MarshalIndent(f, "", "  ") // nothing in it can fail to encode
	return append(b, '\n')
}

// Decode parses a state file's content; name is the file's, for errors,
// which say what is wrong and where.
func Decode(name string, b []byte) (Entries, error) {
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, MaxBytes)
	}
	var f fileJSON
	if err := statefile.DecodeJSON(name, b, &f); err != nil {
		return nil, err
	}
	if f.Version != version {
		return nil, fmt.Errorf("%s: version %d, this daemon reads version %d", name, f.Version, version)
	}
	if len(f.Entries) > MaxEntries {
		return nil, fmt.Errorf("%s: %d entries, at most %d", name, len(f.Entries), MaxEntries)
	}
	out := make(Entries, len(f.Entries))
	for i, ej := range f.Entries {
		if !filepath.IsAbs(ej.Path) || filepath.Clean(ej.Path) != ej.Path {
			return nil, fmt.Errorf("%s: entry %d: path %q is not a clean absolute path", name, i+1, ej.Path)
		}
		if _, dup := out[ej.Path]; dup {
			return nil, fmt.Errorf("%s: entry %d: path %q twice", name, i+1, ej.Path)
		}
		if len(ej.Resolutions) > MaxPerEntry {
			return nil, fmt.Errorf("%s: entry %d (%s): %d resolutions, at most %d", name, i+1, ej.Path, len(ej.Resolutions), MaxPerEntry)
		}
		rs := make([]Resolution, 0, len(ej.Resolutions))
		for j, rj := range ej.Resolutions {
			h, err := hex.DecodeString(rj.Handle)
			if err != nil || len(h) == 0 || len(h) > len(proc.Handle{}.B) {
				return nil, fmt.Errorf("%s: entry %d (%s), resolution %d: handle %q is not 1 to %d bytes of hex", name, i+1, ej.Path, j+1, rj.Handle, len(proc.Handle{}.B))
			}
			r := Resolution{Dev: rj.Dev, Ino: rj.Ino, Handle: proc.Handle{Type: rj.HandleType, Len: uint8(len(h))}}
			copy(r.Handle.B[:], h)
			rs = append(rs, r)
		}
		out[ej.Path] = rs
	}
	return out, nil
}

// Load reads the state file in dir. A missing file is no error: nothing
// was kept. The file must be a regular file that only its owner, the
// daemon's user, can write (statefile.Open): a record allows a program,
// so a file others could write would let them allow theirs.
func Load(dir string) (Entries, error) {
	b, err := statefile.ReadAll(dir, FileName, MaxBytes)
	if b == nil || err != nil {
		return nil, err
	}
	return Decode(filepath.Join(dir, FileName), b)
}

// SetAside renames a state file that could not be read to FILE.bad, so
// that a fresh one can be written without losing it, and returns the
// new name.
func SetAside(dir string) (string, error) { return statefile.SetAside(dir, FileName) }

// Writer writes the latest state handed to it, from a goroutine of its
// own: the permission loop hands a state over and never waits for a
// disk.
type Writer = statefile.Writer[Entries]

// NewWriter writes into dir (made, mode 0700, at the first write);
// onErr hears of failed writes.
func NewWriter(dir string, onErr func(error)) *Writer {
	return statefile.NewWriter(dir, FileName, func(e Entries, w io.Writer) error {
		_, err := w.Write(Encode(e))
		return err
	}, onErr)
}
