package allowstate

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
)

func sample() Entries {
	h := func(b ...byte) proc.Handle {
		x := proc.Handle{Type: 1, Len: uint8(len(b))}
		copy(x.B[:], b)
		return x
	}
	return Entries{
		"/usr/sbin/nginx": {{Dev: 2049, Ino: 12, Handle: h(1, 2, 3, 4, 5, 6, 7, 8)}, {Dev: 2049, Ino: 11, Handle: h(9, 9)}},
		"/usr/bin/tail":   {{Dev: 2049, Ino: 40, Handle: h(0xff)}},
	}
}

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state") // made by the first write
	w := NewWriter(dir, func(err error) { t.Error(err) })
	stop := make(chan struct{})
	done := make(chan struct{})
	w.Save(Entries{"/x": nil}) // replaced before it is written: the last Save is what is kept
	w.Save(sample())
	go func() { w.Run(stop); close(done) }()
	close(stop)
	<-done
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sample()) {
		t.Fatalf("loaded %+v, saved %+v", got, sample())
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, filepath.Join(dir, FileName): 0o600} {
		st, err := os.Stat(p)
		if err != nil || st.Mode().Perm() != want {
			t.Fatalf("%s: mode %v (%v), want %v", p, st.Mode().Perm(), err, want)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, FileName+".*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestMissingFileIsNothingKept(t *testing.T) {
	got, err := Load(t.TempDir())
	if err != nil || got != nil {
		t.Fatalf("Load of an empty directory: %v, %v; want nil, nil", got, err)
	}
}

// Each bad file gets an error that names the file, the line where there
// is one, and the problem.
func TestBadFiles(t *testing.T) {
	good := string(Encode(sample()))
	for _, c := range []struct{ name, content, want string }{
		{"syntax", "{\n\"version\": 1,\n\"entries\": [\n}", ":4: invalid character"},
		{"type", "{\"version\": \"one\"}", ":1: json: cannot unmarshal string"},
		{"version", `{"version": 2, "entries": []}`, "version 2, this daemon reads version 1"},
		{"unknown field", `{"version": 1, "entries": [], "allow_all": true}`, `unknown field "allow_all"`},
		{"relative path", `{"version": 1, "entries": [{"path": "nginx", "resolutions": []}]}`, `entry 1: path "nginx" is not a clean absolute path`},
		{"unclean path", `{"version": 1, "entries": [{"path": "/usr/../sbin/x", "resolutions": []}]}`, "not a clean absolute path"},
		{"twice", `{"version": 1, "entries": [{"path": "/a", "resolutions": []}, {"path": "/a", "resolutions": []}]}`, `entry 2: path "/a" twice`},
		{"handle", `{"version": 1, "entries": [{"path": "/a", "resolutions": [{"dev": 1, "ino": 2, "handle_type": 1, "handle": "zz"}]}]}`, `entry 1 (/a), resolution 1: handle "zz" is not 1 to 128 bytes of hex`},
		{"empty handle", `{"version": 1, "entries": [{"path": "/a", "resolutions": [{"dev": 1, "ino": 2, "handle_type": 1, "handle": ""}]}]}`, "is not 1 to 128 bytes"},
		{"trailing", good + "{}", "data after the JSON object"},
		{"empty", "", "EOF"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, FileName)
			if err := os.WriteFile(p, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(dir)
			if err == nil || !strings.HasPrefix(err.Error(), p) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error starting with %s and containing %q", err, p, c.want)
			}
		})
	}
}

func TestTooManyEntries(t *testing.T) {
	e := Entries{}
	for i := range MaxEntries + 1 {
		e["/p/"+strings.Repeat("x", 1+i%7)+string(rune('a'+i%26))+itoa(i)] = nil
	}
	_, err := Decode("f", Encode(e))
	if err == nil || !strings.Contains(err.Error(), "entries, at most") {
		t.Fatalf("got %v", err)
	}
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// A file others could write, or one that is not a regular file, is not
// read: a record allows a program.
func TestUntrustedFiles(t *testing.T) {
	good := Encode(sample())
	t.Run("group writable", func(t *testing.T) {
		dir := t.TempDir()
		p := filepath.Join(dir, FileName)
		if err := os.WriteFile(p, good, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, 0o620); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "writable by group or others (mode 0620)") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("foreign owner", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("chown needs root")
		}
		dir := t.TempDir()
		p := filepath.Join(dir, FileName)
		if err := os.WriteFile(p, good, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "owned by uid 65534") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("fifo", func(t *testing.T) {
		dir := t.TempDir()
		if err := syscall.Mkfifo(filepath.Join(dir, FileName), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("got %v", err) // and it returned: a FIFO does not block the start
		}
	})
	t.Run("symlink", func(t *testing.T) {
		dir := t.TempDir()
		other := filepath.Join(dir, "other")
		if err := os.WriteFile(other, good, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(other, filepath.Join(dir, FileName)); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "too many levels of symbolic links") {
			t.Fatalf("got %v", err)
		}
	})
}

func TestSetAsideKeepsTheBadFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, FileName)
	if err := os.WriteFile(p, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad, err := SetAside(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(bad); err != nil || string(b) != "not json" {
		t.Fatalf("%s: %q, %v", bad, b, err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("%s still there: %v", p, err)
	}
}

// FuzzDecode: no input crashes the parser, and what it accepts encodes
// back to a file that decodes to the same entries.
func FuzzDecode(f *testing.F) {
	f.Add(Encode(sample()))
	f.Add([]byte(`{"version": 1, "entries": []}`))
	f.Add([]byte(`{"version": 1, "entries": [{"path": "/a", "resolutions": [{"dev": 1, "ino": 2, "handle_type": -1, "handle": "00"}]}]}`))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Decode("f", b)
		if err != nil {
			return
		}
		again, err := Decode("f", Encode(e))
		if err != nil {
			t.Fatalf("re-encoded state does not decode: %v", err)
		}
		if !reflect.DeepEqual(normal(e), normal(again)) {
			t.Fatalf("round trip changed the entries: %+v -> %+v", e, again)
		}
	})
}

// normal makes empty resolution lists nil, as decoding gives them.
func normal(e Entries) Entries {
	out := Entries{}
	for p, rs := range e {
		if len(rs) == 0 {
			rs = nil
		}
		out[p] = rs
	}
	return out
}
