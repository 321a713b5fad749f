// Package baseline keeps the facts of every watched file of the host
// (size, mode, owner, modification time, content hash) across restarts
// of the daemon, in one file under --state.dir, and compares them with
// the files as they are at the next start: what was created, deleted or
// changed while the daemon was down (Diff).
//
// The file is JSON lines: a header line that says what the file is, one
// line per filter in force when it was written, one line per file. It
// is bounded (Limits): a file that is truncated, foreign (not a
// baseline), too large or holds too many entries is an error that names
// the file and the line, and the engine sets it aside and builds a new
// baseline (statefile). Only the host's files are kept: a container's
// files live and die with the container, and a new one starts from its
// image.
package baseline

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/statefile"
)

// FileName is the baseline's name in the state directory; the learned
// set and the allow resolutions have names of their own.
const FileName = "watched-files-baseline.jsonl"

// format is the header's value: a file without it is not a baseline.
const (
	format  = "fsmon_exporter watched-files baseline"
	version = 1
)

// Limits bound what a baseline file may hold.
type Limits struct {
	MaxBytes   int64
	MaxEntries int
}

// DefaultLimits: about 250 bytes a file, so far above what MaxEntries
// entries take; MaxEntries is a quarter of --watch.max-objects' default.
var DefaultLimits = Limits{MaxBytes: 128 << 20, MaxEntries: 1 << 18}

// maxLine bounds one line: a path of PATH_MAX and the facts.
const maxLine = 16 << 10

// Filter names a filter of a profile.
type Filter struct{ Profile, Filter string }

// Entry is one watched file: the filter it is watched under, its
// identity and what it is. Entries are values nobody changes once made.
type Entry struct {
	Filter
	Dev, Ino uint64
	// Ctime is the inode's change time (nanoseconds): with the identity,
	// size and mtime unchanged, the content is taken to be unchanged and
	// the kept hash reused.
	Ctime int64
	Facts fsmon.FileFacts
}

// Baseline is the host's watched files by path, and the filters in
// force when it was written: a file of a filter that was not is newly
// covered, not created.
type Baseline struct {
	Files   map[string]*Entry
	Filters map[Filter]struct{}
}

type headerJSON struct {
	Format  string    `json:"format"`
	Version int       `json:"version"`
	Saved   time.Time `json:"saved"`
}

type lineJSON struct {
	// A filter line has Profile and Filter only; a file line Path too.
	Profile  string `json:"profile"`
	Filter   string `json:"filter"`
	Path     string `json:"path,omitempty"`
	Dev      uint64 `json:"dev,omitempty"`
	Ino      uint64 `json:"ino,omitempty"`
	Ctime    int64  `json:"ctime_ns,omitempty"`
	Size     int64  `json:"size,omitempty"`
	Mode     uint32 `json:"mode,omitempty"`
	UID      uint32 `json:"uid,omitempty"`
	GID      uint32 `json:"gid,omitempty"`
	Owner    string `json:"owner,omitempty"`
	Group    string `json:"group,omitempty"`
	Mtime    int64  `json:"mtime_ns,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	Unhashed string `json:"hash_skipped,omitempty"`
}

// Encode is the file's content for b, filters and files sorted so that
// equal baselines give equal files.
func Encode(b *Baseline, saved time.Time) []byte {
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	_ = enc.Encode(headerJSON{Format: format, Version: version, Saved: saved.UTC()}) // nothing in it can fail to encode
	fs := make([]Filter, 0, len(b.Filters))
	for f := range b.Filters {
		fs = append(fs, f)
	}
	sort.Slice(fs, func(i, j int) bool {
		return fs[i].Profile < fs[j].Profile || fs[i].Profile == fs[j].Profile && fs[i].Filter < fs[j].Filter
	})
	for _, f := range fs {
		_ = enc.Encode(lineJSON{Profile: f.Profile, Filter: f.Filter})
	}
	paths := make([]string, 0, len(b.Files))
	for p := range b.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		e := b.Files[p]
		l := lineJSON{Profile: e.Profile, Filter: e.Filter.Filter, Path: p, Dev: e.Dev, Ino: e.Ino, Ctime: e.Ctime,
			Size: e.Facts.Size, Mode: e.Facts.Mode, UID: e.Facts.UID, GID: e.Facts.GID,
			Owner: e.Facts.OwnerName, Group: e.Facts.GroupName}
		if !e.Facts.Mtime.IsZero() {
			l.Mtime = e.Facts.Mtime.UnixNano()
		}
		if e.Facts.Hash == fsmon.HashComputed {
			l.SHA256 = hex.EncodeToString(e.Facts.SHA256[:])
		} else {
			l.Unhashed = e.Facts.Hash.String()
		}
		_ = enc.Encode(l)
	}
	return out.Bytes()
}

// ErrNotBaseline says a file is not a baseline: another file's content
// at the baseline's name.
var ErrNotBaseline = errors.New("not a watched-files baseline")

// Decode parses a baseline from r; name is the file's, for errors,
// which say what is wrong and on which line.
func Decode(name string, r io.Reader, lim Limits) (*Baseline, error) {
	cr := &counter{r: io.LimitReader(r, lim.MaxBytes+1)}
	sc := bufio.NewScanner(cr)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	line := 0
	next := func() ([]byte, error) {
		more := sc.Scan()
		if cr.n > lim.MaxBytes {
			return nil, fmt.Errorf("%s: larger than %d bytes", name, lim.MaxBytes)
		}
		if !more {
			if err := sc.Err(); err != nil {
				if errors.Is(err, bufio.ErrTooLong) {
					return nil, fmt.Errorf("%s:%d: line longer than %d bytes", name, line+1, maxLine)
				}
				return nil, fmt.Errorf("%s:%d: %w", name, line+1, err)
			}
			return nil, io.EOF
		}
		line++
		return sc.Bytes(), nil
	}
	first, err := next()
	if err == io.EOF {
		return nil, fmt.Errorf("%s: empty (truncated?): %w", name, ErrNotBaseline)
	}
	if err != nil {
		return nil, err
	}
	var h headerJSON
	if err := strict(first, &h); err != nil || h.Format != format {
		return nil, fmt.Errorf("%s:1: %w: the first line is not the header {\"format\":%q,...}", name, ErrNotBaseline, format)
	}
	if h.Version != version {
		return nil, fmt.Errorf("%s:1: version %d, this daemon reads version %d", name, h.Version, version)
	}
	b := &Baseline{Files: map[string]*Entry{}, Filters: map[Filter]struct{}{}}
	for {
		l, err := next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		var lj lineJSON
		if err := strict(l, &lj); errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%s:%d: the line ends inside its JSON object (a truncated file?): %w", name, line, err)
		} else if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		f := Filter{Profile: lj.Profile, Filter: lj.Filter}
		if f.Profile == "" || f.Filter == "" {
			return nil, fmt.Errorf("%s:%d: no profile or filter", name, line)
		}
		if lj.Path == "" {
			// A filter line: its profile and name only.
			if lj != (lineJSON{Profile: lj.Profile, Filter: lj.Filter}) {
				return nil, fmt.Errorf("%s:%d: a line with facts but no path", name, line)
			}
			b.Filters[f] = struct{}{}
			continue
		}
		e, err := entryOf(&lj)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		if _, dup := b.Files[lj.Path]; dup {
			return nil, fmt.Errorf("%s:%d: path %q twice", name, line, lj.Path)
		}
		if len(b.Files) >= lim.MaxEntries {
			return nil, fmt.Errorf("%s:%d: more than %d files", name, line, lim.MaxEntries)
		}
		b.Files[lj.Path] = e
	}
	if len(b.Filters) > lim.MaxEntries {
		return nil, fmt.Errorf("%s: %d filters, at most %d", name, len(b.Filters), lim.MaxEntries)
	}
	return b, nil
}

// counter counts what is read through it.
type counter struct {
	r io.Reader
	n int64
}

func (c *counter) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// entryOf checks a file line and makes its entry.
func entryOf(lj *lineJSON) (*Entry, error) {
	if !filepath.IsAbs(lj.Path) || filepath.Clean(lj.Path) != lj.Path {
		return nil, fmt.Errorf("path %q is not a clean absolute path", lj.Path)
	}
	if lj.Mode&^0o7777 != 0 {
		return nil, fmt.Errorf("%s: mode %o has bits other than permissions", lj.Path, lj.Mode)
	}
	if lj.Size < 0 {
		return nil, fmt.Errorf("%s: size %d", lj.Path, lj.Size)
	}
	e := &Entry{Filter: Filter{lj.Profile, lj.Filter}, Dev: lj.Dev, Ino: lj.Ino, Ctime: lj.Ctime,
		Facts: fsmon.FileFacts{Size: lj.Size, Mode: lj.Mode, UID: lj.UID, GID: lj.GID, OwnerName: lj.Owner, GroupName: lj.Group}}
	if lj.Mtime != 0 {
		e.Facts.Mtime = time.Unix(0, lj.Mtime)
	}
	switch {
	case lj.SHA256 != "" && lj.Unhashed != "":
		return nil, fmt.Errorf("%s: a hash and a reason it was skipped", lj.Path)
	case lj.SHA256 != "":
		h, err := hex.DecodeString(lj.SHA256)
		if err != nil || len(h) != len(e.Facts.SHA256) {
			return nil, fmt.Errorf("%s: sha256 %q is not 64 hex digits", lj.Path, lj.SHA256)
		}
		copy(e.Facts.SHA256[:], h)
		e.Facts.Hash = fsmon.HashComputed
	default:
		e.Facts.Hash = skipOf(lj.Unhashed)
		if e.Facts.Hash == 0 {
			return nil, fmt.Errorf("%s: hash_skipped %q is no reason this daemon knows", lj.Path, lj.Unhashed)
		}
	}
	return e, nil
}

func skipOf(s string) fsmon.HashState {
	for _, h := range fsmon.HashSkips {
		if h.String() == s {
			return h
		}
	}
	return 0
}

// strict decodes one JSON object, with no unknown fields and nothing
// after it.
func strict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the JSON object")
	}
	return nil
}

// Load reads the baseline in dir (statefile.Open: only a file the
// daemon's user alone can write, at most lim.MaxBytes); nil, nil when
// there is none: the first start.
func Load(dir string, lim Limits) (*Baseline, error) {
	f, _, err := statefile.Open(dir, FileName, lim.MaxBytes)
	if f == nil || err != nil {
		return nil, err
	}
	defer f.Close()
	return Decode(f.Name(), f, lim)
}

// SetAside keeps a baseline that could not be read as FILE.bad.
func SetAside(dir string) (string, error) { return statefile.SetAside(dir, FileName) }

// Snapshot is a baseline handed to the writer, with when it was made.
type Snapshot struct {
	*Baseline
	At time.Time
}

// Writer writes baselines from a goroutine of its own.
type Writer = statefile.Writer[Snapshot]

// NewWriter writes into dir; onErr hears of failed writes.
func NewWriter(dir string, onErr func(error)) *Writer {
	return statefile.NewWriter(dir, FileName, func(s Snapshot) []byte { return Encode(s.Baseline, s.At) }, onErr)
}
