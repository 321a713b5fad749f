package baseline

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

var shadow = Filter{Profile: "host", Filter: "shadow"}

func sample() *Baseline {
	return &Baseline{
		Files: map[string]*Entry{
			"/etc/shadow": {Filter: shadow, Dev: 2049, Ino: 12, Ctime: 1700000000123456789,
				Facts: fsmon.FileFacts{Size: 1024, Mode: 0o640, UID: 0, GID: 42, OwnerName: "root", GroupName: "shadow",
					Mtime: time.Unix(1700000000, 5), SHA256: [32]byte{1, 2, 3}, Hash: fsmon.HashComputed}},
			"/etc/big": {Filter: shadow, Dev: 2049, Ino: 13, Facts: fsmon.FileFacts{Size: 1 << 30, Mode: 0o4755, Hash: fsmon.HashSkippedSize}},
		},
		Filters: map[Filter]struct{}{shadow: {}, {Profile: "host", Filter: "other"}: {}},
	}
}

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	w := NewWriter(dir, func(err error) { t.Error(err) })
	stop, done := make(chan struct{}), make(chan struct{})
	w.Save(Snapshot{Baseline: sample(), At: time.Unix(1, 0)})
	go func() { w.Run(stop); close(done) }()
	close(stop)
	<-done
	got, err := Load(dir, DefaultLimits)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range got.Files {
		e.Facts.Mtime = e.Facts.Mtime.UTC()
	}
	want := sample()
	for _, e := range want.Files {
		e.Facts.Mtime = e.Facts.Mtime.UTC()
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("loaded %+v, saved %+v", got, want)
	}
	if !bytes.Equal(Encode(got, time.Unix(1, 0)), Encode(sample(), time.Unix(1, 0))) {
		t.Fatal("equal baselines give different files")
	}
}

func TestNoFileIsFirstStart(t *testing.T) {
	if b, err := Load(t.TempDir(), DefaultLimits); b != nil || err != nil {
		t.Fatalf("%v, %v; want nil, nil", b, err)
	}
}

// Each bad file is an error that names the file, the line where there
// is one, and what is wrong.
func TestBadFiles(t *testing.T) {
	good := string(Encode(sample(), time.Unix(1, 0)))
	lines := strings.SplitAfter(good, "\n")
	header := lines[0]
	ok := "file\t\"/a\"\t\"p\"\t\"f\"\t1\t2\t3\t4\t644\t0\t0\t\"root\"\t\"root\"\t5\tskipped:size\n"
	with := func(field int, v string) string {
		f := strings.Split(strings.TrimSuffix(ok, "\n"), "\t")
		f[field] = v
		return header + strings.Join(f, "\t") + "\n"
	}
	for _, c := range []struct{ name, content, want string }{
		{"empty", "", "empty (truncated?): not a watched-files baseline"},
		{"foreign", `{"version": 1, "entries": []}` + "\n", ":1: not a watched-files baseline"},
		{"not json", "hello\n", ":1: not a watched-files baseline"},
		{"version", strings.Replace(header, `"version":1`, `"version":2`, 1), ":1: version 2, this daemon reads version 1"},
		{"truncated", good[:len(good)-30], ":5: the last line has no newline (a truncated file?)"},
		{"no newline at the end", header + strings.TrimSuffix(ok, "\n"), ":2: the last line has no newline (a truncated file?)"},
		{"good", header + ok, ""},
		{"unknown line", header + "allow\t\"/bin/sh\"\n", `:2: not a filter or file line ("allow")`},
		{"extra field", header + strings.TrimSuffix(ok, "\n") + "\textra\n", ":2: more than 15 fields"},
		{"relative", with(1, `"a"`), `:2: path "a" is not a clean absolute path`},
		{"unquoted", with(1, `/a`), `:2: path /a is not a quoted string`},
		{"twice", header + ok + ok, `:3: path "/a" twice`},
		{"hash", with(14, "sha256:abc"), `:2: /a: hash "sha256:abc" is not sha256: and 64 hex digits`},
		{"no hash state", with(14, "skipped:"), `:2: /a: "skipped:" is no reason`},
		{"mode", with(8, "120644"), ":2: /a: mode \"120644\" is not a number in range"},
		{"negative size", with(7, "-1"), ":2: /a: size \"-1\" is not a number in range"},
		{"no filter", with(3, `""`), ":2: /a: no profile or filter"},
		{"long line", header + strings.Repeat("x", maxLine+1) + "\n", ":2: line longer than"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, FileName)
			if err := os.WriteFile(p, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(dir, DefaultLimits)
			if c.want == "" {
				if err != nil {
					t.Fatalf("a good file: %v", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), p) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error starting with %s and containing %q", err, p, c.want)
			}
		})
	}
}

// Bounded: a file past the byte limit is not read at all, one with too
// many entries stops at the first entry too many.
func TestLimits(t *testing.T) {
	b := Encode(sample(), time.Unix(1, 0))
	if _, err := Decode("f", bytes.NewReader(b), Limits{MaxBytes: int64(len(b)) - 1, MaxEntries: 10}); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("byte limit: %v", err)
	}
	three := sample()
	three.Files["/etc/third"] = three.Files["/etc/big"]
	if _, err := Decode("f", bytes.NewReader(Encode(three, time.Unix(1, 0))), Limits{MaxBytes: 1 << 20, MaxEntries: 2}); err == nil || !strings.Contains(err.Error(), "f:6: more than 2 files") {
		t.Fatalf("entry limit: %v", err)
	}
	if _, err := Decode("f", bytes.NewReader(b), Limits{MaxBytes: 1 << 20, MaxEntries: 1}); err == nil || !strings.Contains(err.Error(), "f:3: more than 1 filters") {
		t.Fatalf("filter limit: %v", err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, FileName)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 1<<40); err != nil { // sparse
		t.Fatal(err)
	}
	if _, err := Load(dir, DefaultLimits); err == nil || !strings.Contains(err.Error(), "larger than the") {
		t.Fatalf("a huge file: %v", err)
	}
}

func TestDiff(t *testing.T) {
	e := func(ino uint64, size int64, mode uint32, hash byte, f Filter) *Entry {
		return &Entry{Filter: f, Dev: 1, Ino: ino, Facts: fsmon.FileFacts{Size: size, Mode: mode, SHA256: [32]byte{hash}, Hash: fsmon.HashComputed}}
	}
	gone := Filter{Profile: "host", Filter: "removed from the configuration"}
	added := Filter{Profile: "host", Filter: "new in the configuration"}
	old := &Baseline{Files: map[string]*Entry{
		"/same":        e(1, 1, 0o644, 1, shadow),
		"/written":     e(2, 1, 0o644, 1, shadow),
		"/rewritten":   e(3, 1, 0o644, 1, shadow), // same size and mtime, other hash
		"/chmodded":    e(4, 1, 0o644, 1, shadow),
		"/replaced":    e(5, 1, 0o644, 1, shadow),
		"/deleted":     e(6, 1, 0o644, 1, shadow),
		"/unwatched":   e(7, 1, 0o644, 1, gone),
		"/not hashed":  {Filter: shadow, Dev: 1, Ino: 8, Facts: fsmon.FileFacts{Size: 9, Hash: fsmon.HashSkippedSize}},
		"/hashed late": {Filter: shadow, Dev: 1, Ino: 9, Facts: fsmon.FileFacts{Size: 9, Hash: fsmon.HashSkippedRate}},
	}, Filters: map[Filter]struct{}{shadow: {}, gone: {}}}
	now := map[string]*Entry{
		"/same":        e(1, 1, 0o644, 1, shadow),
		"/written":     e(2, 2, 0o644, 2, shadow),
		"/rewritten":   e(3, 1, 0o644, 2, shadow),
		"/chmodded":    e(4, 1, 0o600, 1, shadow),
		"/replaced":    e(50, 1, 0o644, 1, shadow),
		"/created":     e(10, 1, 0o644, 1, shadow),
		"/newly seen":  e(11, 1, 0o644, 1, added),
		"/not hashed":  {Filter: shadow, Dev: 1, Ino: 8, Facts: fsmon.FileFacts{Size: 9, Hash: fsmon.HashSkippedSize}},
		"/hashed late": e(9, 9, 0, 7, shadow),
	}
	inForce := map[Filter]struct{}{shadow: {}, added: {}}
	var got []string
	for _, c := range Diff(old, now, inForce) {
		got = append(got, c.Op.String()+" "+c.Path)
	}
	want := []string{"attrib /chmodded", "create /created", "delete /deleted", "rename /replaced", "write /rewritten", "write /written"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

// FuzzDecode: no input crashes the parser or passes its bounds, and
// what it accepts encodes back to a file that decodes to the same.
func FuzzDecode(f *testing.F) {
	good := Encode(sample(), time.Unix(1, 0))
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(`{"format":"fsmon_exporter watched-files baseline","version":1,"saved":"1970-01-01T00:00:00Z"}` + "\n"))
	f.Add([]byte("{\n"))
	lim := Limits{MaxBytes: 1 << 16, MaxEntries: 64}
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := Decode("f", bytes.NewReader(b), lim)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f") {
				t.Fatalf("error without the file's name: %v", err)
			}
			return
		}
		if len(x.Files) > lim.MaxEntries {
			t.Fatalf("%d files past the limit", len(x.Files))
		}
		again, err := Decode("f", bytes.NewReader(Encode(x, time.Unix(1, 0))), Limits{MaxBytes: 1 << 30, MaxEntries: lim.MaxEntries})
		if err != nil {
			t.Fatalf("re-encoded baseline does not decode: %v", err)
		}
		if !bytes.Equal(Encode(x, time.Unix(1, 0)), Encode(again, time.Unix(1, 0))) {
			t.Fatal("decode(encode(x)) differs from x")
		}
	})
}
