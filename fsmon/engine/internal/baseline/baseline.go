// Package baseline keeps the facts of every watched file of the host
// (size, mode, owner, modification time, content hash) across restarts
// of the daemon, in one file under --state.dir, and compares them with
// the files as they are at the next start: what was created, deleted or
// changed while the daemon was down (Diff).
//
// The file is lines: a JSON header that says what the file is, one
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
	"strconv"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/statefile"
)

// FileName is the baseline's name in the state directory; the learned
// set and the allow resolutions have names of their own.
const FileName = "watched-files.baseline"

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

// The lines after the header: tab-separated fields, strings quoted as
// Go quotes them (so a tab or newline in a name is escaped), numbers
// decimal, the mode octal. Not JSON: encoding/json takes 15 µs a line,
// 1.5 s for 100,000 files at every start; these take about 1.
//
//	filter	"PROFILE"	"FILTER"
//	file	"PATH"	"PROFILE"	"FILTER"	DEV	INO	CTIME_NS	SIZE	MODE	UID	GID	"OWNER"	"GROUP"	MTIME_NS	HASH
//
// HASH is sha256:HEX, or skipped:REASON.
const (
	filterWord = "filter"
	fileWord   = "file"
	fileFields = 15
)

// Encode is the file's content for b (WriteTo into a buffer).
func Encode(b *Baseline, saved time.Time) []byte {
	var out bytes.Buffer
	_ = WriteTo(&out, b, saved) // a buffer does not fail
	return out.Bytes()
}

// WriteTo writes the file's content for b to w, filters and files
// sorted so that equal baselines give equal files.
func WriteTo(w io.Writer, b *Baseline, saved time.Time) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	hb, _ := json.Marshal(headerJSON{Format: format, Version: version, Saved: saved.UTC()}) // nothing in it can fail to encode
	bw.Write(hb)
	bw.WriteByte('\n')
	fs := make([]Filter, 0, len(b.Filters))
	for f := range b.Filters {
		fs = append(fs, f)
	}
	sort.Slice(fs, func(i, j int) bool {
		return fs[i].Profile < fs[j].Profile || fs[i].Profile == fs[j].Profile && fs[i].Filter < fs[j].Filter
	})
	var l []byte
	for _, f := range fs {
		l = append(l[:0], filterWord...)
		l = appendQuoted(l, f.Profile)
		l = appendQuoted(l, f.Filter)
		bw.Write(append(l, '\n'))
	}
	paths := make([]string, 0, len(b.Files))
	for p := range b.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		e := b.Files[p]
		l = append(l[:0], fileWord...)
		l = appendQuoted(l, p)
		l = appendQuoted(l, e.Profile)
		l = appendQuoted(l, e.Filter.Filter)
		l = strconv.AppendUint(append(l, '\t'), e.Dev, 10)
		l = strconv.AppendUint(append(l, '\t'), e.Ino, 10)
		l = strconv.AppendInt(append(l, '\t'), e.Ctime, 10)
		l = strconv.AppendInt(append(l, '\t'), e.Facts.Size, 10)
		l = strconv.AppendUint(append(l, '\t'), uint64(e.Facts.Mode), 8)
		l = strconv.AppendUint(append(l, '\t'), uint64(e.Facts.UID), 10)
		l = strconv.AppendUint(append(l, '\t'), uint64(e.Facts.GID), 10)
		l = appendQuoted(l, e.Facts.OwnerName)
		l = appendQuoted(l, e.Facts.GroupName)
		var mt int64
		if !e.Facts.Mtime.IsZero() {
			mt = e.Facts.Mtime.UnixNano()
		}
		l = strconv.AppendInt(append(l, '\t'), mt, 10)
		if e.Facts.Hash == fsmon.HashComputed {
			l = hex.AppendEncode(append(l, "\tsha256:"...), e.Facts.SHA256[:])
		} else {
			l = append(append(l, "\tskipped:"...), e.Facts.Hash.String()...)
		}
		if _, err := bw.Write(append(l, '\n')); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func appendQuoted(b []byte, s string) []byte { return strconv.AppendQuote(append(b, '\t'), s) }

// ErrNotBaseline says a file is not a baseline: another file's content
// at the baseline's name.
var ErrNotBaseline = errors.New("not a watched-files baseline")

// Decode parses a baseline from r; name is the file's, for errors,
// which say what is wrong and on which line.
func Decode(name string, r io.Reader, lim Limits) (*Baseline, error) {
	cr := &counter{r: io.LimitReader(r, lim.MaxBytes+1)}
	sc := bufio.NewScanner(cr)
	sc.Buffer(make([]byte, 0, 4096), maxLine)
	terminated := false // the last line scanned ended with a newline
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		adv, tok, err := bufio.ScanLines(data, atEOF)
		terminated = adv > 0 && data[adv-1] == '\n'
		return adv, tok, err
	})
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
		if !terminated {
			return nil, fmt.Errorf("%s:%d: the last line has no newline (a truncated file?)", name, line)
		}
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
	d := decoder{b: &Baseline{Files: map[string]*Entry{}, Filters: map[Filter]struct{}{}}, names: map[string]string{}}
	for {
		l, err := next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := d.line(l, lim); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
	}
	return d.b, nil
}

// decoder holds what the lines decoded so far made, and the strings
// seen, so that 100,000 files of one owner hold one copy of its name.
type decoder struct {
	b     *Baseline
	names map[string]string
	f     [fileFields][]byte
}

// errTruncated: a line is cut short.
var errTruncated = errors.New("the line is cut short (a truncated file?)")

func (d *decoder) line(l []byte, lim Limits) error {
	n := 0
	for len(l) > 0 && n < len(d.f) {
		i := bytes.IndexByte(l, '\t')
		if i < 0 {
			d.f[n], l = l, nil
		} else {
			d.f[n], l = l[:i], l[i+1:]
		}
		n++
	}
	if len(l) > 0 {
		return fmt.Errorf("more than %d fields", len(d.f))
	}
	f := d.f[:n]
	if n == 0 {
		return errors.New("an empty line")
	}
	switch {
	case n == 3 && string(f[0]) == filterWord:
		flt, err := d.filter(f[1], f[2])
		if err != nil {
			return err
		}
		if len(d.b.Filters) >= lim.MaxEntries {
			return fmt.Errorf("more than %d filters", lim.MaxEntries)
		}
		d.b.Filters[flt] = struct{}{}
		return nil
	case n >= 1 && string(f[0]) == fileWord:
		if n < fileFields {
			return errTruncated
		}
		return d.file(f, lim)
	}
	return fmt.Errorf("not a filter or file line (%.20q)", f[0])
}

func (d *decoder) filter(p, f []byte) (Filter, error) {
	profile, err := d.str("profile", p)
	if err != nil {
		return Filter{}, err
	}
	filter, err := d.str("filter", f)
	if err != nil {
		return Filter{}, err
	}
	if profile == "" || filter == "" {
		return Filter{}, errors.New("no profile or filter")
	}
	return Filter{profile, filter}, nil
}

// str unquotes a string field, keeping one copy of each.
func (d *decoder) str(what string, b []byte) (string, error) {
	if s, ok := d.names[string(b)]; ok {
		return s, nil
	}
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return "", fmt.Errorf("%s %.40s is not a quoted string", what, b)
	}
	if len(d.names) < 4096 {
		d.names[string(b)] = s
	}
	return s, nil
}

func (d *decoder) file(f [][]byte, lim Limits) error {
	p, err := strconv.Unquote(string(f[1]))
	if err != nil {
		return fmt.Errorf("path %.40s is not a quoted string", f[1])
	}
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return fmt.Errorf("path %q is not a clean absolute path", p)
	}
	flt, err := d.filter(f[2], f[3])
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	e := &Entry{Filter: flt}
	var nums [9]uint64
	for i, what := range [...]string{"dev", "ino", "ctime", "size", "mode", "uid", "gid"} {
		base, bits := 10, 64
		switch what {
		case "mode":
			base, bits = 8, 12
		case "uid", "gid":
			bits = 32
		case "ctime", "size":
			bits = 63
		}
		v, err := strconv.ParseUint(string(f[4+i]), base, bits)
		if err != nil {
			return fmt.Errorf("%s: %s %.24q is not a number in range", p, what, f[4+i])
		}
		nums[i] = v
	}
	e.Dev, e.Ino, e.Ctime = nums[0], nums[1], int64(nums[2])
	e.Facts.Size, e.Facts.Mode, e.Facts.UID, e.Facts.GID = int64(nums[3]), uint32(nums[4]), uint32(nums[5]), uint32(nums[6])
	if e.Facts.OwnerName, err = d.str("owner", f[11]); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if e.Facts.GroupName, err = d.str("group", f[12]); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	mt, err := strconv.ParseInt(string(f[13]), 10, 64)
	if err != nil {
		return fmt.Errorf("%s: mtime %.24q is not a number", p, f[13])
	}
	if mt != 0 {
		e.Facts.Mtime = time.Unix(0, mt)
	}
	switch h := f[14]; {
	case bytes.HasPrefix(h, []byte("sha256:")):
		n, err := hex.Decode(e.Facts.SHA256[:], h[len("sha256:"):])
		if err != nil || n != len(e.Facts.SHA256) || len(h) != len("sha256:")+2*len(e.Facts.SHA256) {
			return fmt.Errorf("%s: hash %.80q is not sha256: and 64 hex digits", p, h)
		}
		e.Facts.Hash = fsmon.HashComputed
	case bytes.HasPrefix(h, []byte("skipped:")):
		if e.Facts.Hash = skipOf(string(h[len("skipped:"):])); e.Facts.Hash == 0 {
			return fmt.Errorf("%s: %.40q is no reason a hash is skipped that this daemon knows", p, h)
		}
	default:
		return fmt.Errorf("%s: hash %.40q is neither sha256:HEX nor skipped:REASON", p, h)
	}
	if _, dup := d.b.Files[p]; dup {
		return fmt.Errorf("path %q twice", p)
	}
	if len(d.b.Files) >= lim.MaxEntries {
		return fmt.Errorf("more than %d files", lim.MaxEntries)
	}
	d.b.Files[p] = e
	return nil
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
	return statefile.NewWriter(dir, FileName, func(s Snapshot, w io.Writer) error { return WriteTo(w, s.Baseline, s.At) }, onErr)
}
