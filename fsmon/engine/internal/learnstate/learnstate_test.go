package learnstate

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/statefile"
)

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

func learned(exe, file string, uid int64, ctr string, at time.Time, count int) *fsmon.Event {
	ev := &fsmon.Event{Time: at, Kind: fsmon.KindLearned, Profile: "p", Filter: "f", Path: file, Count: count,
		Process: fsmon.Process{ExecutablePath: exe, UserID: uid, UserName: fmt.Sprint("u", uid)}}
	if ctr != "" {
		ev.Container = fsmon.Container{ID: ctr, Name: "n-" + ctr, Pod: fsmon.Pod{Namespace: "ns", Name: "pod"}}
	}
	return ev
}

func TestObserve(t *testing.T) {
	s := NewSet(nil)
	if s.Observe(&fsmon.Event{Kind: fsmon.KindDenied, Profile: "p", Filter: "f"}) {
		t.Fatal("a denied event changed the learned set")
	}
	s.Observe(learned("/usr/bin/cat", "/etc/a", 0, "", t0.Add(time.Minute), 1))
	s.Observe(learned("/usr/bin/cat", "/etc/a", 0, "", t0, 3)) // earlier, folded
	s.Observe(learned("/usr/bin/cat", "/etc/b", 1000, "c1", t0.Add(time.Hour), 1))
	for i := 0; i < MaxFiles+5; i++ {
		s.Observe(learned("/usr/bin/tail", fmt.Sprintf("/etc/f%d", i), 0, "", t0, 1))
	}
	es := s.Entries()
	if len(es) != 2 {
		t.Fatalf("%d entries, want 2: %+v", len(es), es)
	}
	want := Entry{Profile: "p", Filter: "f", Executable: "/usr/bin/cat", Count: 5, First: t0, Last: t0.Add(time.Hour),
		Files: []string{"/etc/a", "/etc/b"}, Users: []User{{0, "u0"}, {1000, "u1000"}}, Host: true,
		Containers: []Container{{ID: "c1", Name: "n-c1", K8sNamespace: "ns", K8sPod: "pod"}}}
	if !reflect.DeepEqual(es[0], want) {
		t.Errorf("got %+v\nwant %+v", es[0], want)
	}
	if len(es[1].Files) != MaxFiles || !es[1].MoreFiles || es[1].Count != MaxFiles+5 {
		t.Errorf("tail: %d files, more %v, count %d; want %d, true, %d", len(es[1].Files), es[1].MoreFiles, es[1].Count, MaxFiles, MaxFiles+5)
	}
	if n := s.Retain(func(p, f string) bool { return f != "f" }); n != 2 || len(s.Entries()) != 0 {
		t.Errorf("Retain dropped %d, left %d; want 2 and 0", n, len(s.Entries()))
	}
}

func TestBounded(t *testing.T) {
	s := NewSet(nil)
	for i := 0; i < MaxEntries+3; i++ {
		s.Observe(learned(fmt.Sprintf("/bin/x%d", i), "/etc/a", 0, "", t0, 1))
	}
	if n := len(s.Entries()); n != MaxEntries || s.Dropped() != 3 {
		t.Fatalf("%d entries, %d dropped; want %d and 3", n, s.Dropped(), MaxEntries)
	}
}

func TestRoundTripThroughTheFile(t *testing.T) {
	s := NewSet(nil)
	s.Observe(learned("/usr/bin/cat", "/etc/a", 0, "c1", t0, 2))
	s.Observe(learned("/usr/sbin/sshd", "/etc/shadow", 0, "", t0, 1))
	name := filepath.Join(t.TempDir(), "state", FileName)
	w := statefile.NewPoller(filepath.Dir(name), filepath.Base(name), time.Hour, s.EncodeChanged, func(err error) { t.Error(err) })
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { w.Run(stop); close(done) }()
	w.Changed()
	close(stop)
	<-done
	got, err := Load(name)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s.Entries()) {
		t.Fatalf("loaded %+v\nsaved %+v", got, s.Entries())
	}
	if st, err := os.Stat(name); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v, want mode 0600", name, st, err)
	}
	if s.EncodeChanged() != nil {
		t.Error("EncodeChanged of an unchanged set wants writing")
	}
	if got, err := Load(filepath.Join(t.TempDir(), "none")); got != nil || err != nil {
		t.Errorf("a missing file: %v %v, want nothing", got, err)
	}
}

func TestBadFiles(t *testing.T) {
	good := string(Encode(NewSet([]Entry{{Profile: "p", Filter: "f", Executable: "/bin/x", Count: 1, First: t0, Last: t0}}).Entries()))
	for _, c := range []struct{ name, content, want string }{
		{"truncated", good[:len(good)/2], "learned.json: empty or cut short"},
		{"empty", "", "learned.json: empty or cut short"},
		{"allowstate", `{"version":1,"entries":[{"path":"/usr/bin/x","resolutions":[]}]}`, `learned.json: json: unknown field "path"`},
		{"other version", `{"version":7,"entries":[]}`, "learned.json: version 7, this daemon reads version 1"},
		{"syntax", "{\n\"version\": 1,\n,}", "learned.json:3: invalid character"},
		{"relative exe", strings.Replace(good, `"/bin/x"`, `"bin/x"`, 1), `entry 1: executable "bin/x" is not a clean absolute path`},
		{"zero count", strings.Replace(good, `"count": 1`, `"count": 0`, 1), "entry 1: count is 0"},
		{"twice", strings.Replace(good, "\n  ]", ",\n"+good[strings.Index(good, "    {"):strings.LastIndex(good, "}\n  ]")+1]+"\n  ]", 1), "entry 2: profile \"p\", filter \"f\", executable \"/bin/x\" twice"},
		{"trailing", good + "{}", "data after the JSON object"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode("learned.json", []byte(c.content))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want it to say %q", err, c.want)
			}
		})
	}
	t.Run("huge", func(t *testing.T) {
		name := filepath.Join(t.TempDir(), FileName)
		f, _ := os.OpenFile(name, os.O_CREATE|os.O_WRONLY, 0o600)
		f.Truncate(MaxBytes + 1)
		f.Close()
		_, err := Load(name)
		if err == nil || !strings.Contains(err.Error(), name+": ") || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("err %v, want %s: larger than", err, name)
		}
	})
}

func FuzzDecode(f *testing.F) {
	s := NewSet(nil)
	s.Observe(learned("/usr/bin/cat", "/etc/a", 0, "c1", t0, 2))
	f.Add(Encode(s.Entries()))
	f.Add([]byte(`{"version":1,"entries":[]}`))
	f.Add([]byte(`{"version":1,"entries":[{"profile":"p"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := Decode("f", b)
		if err != nil {
			return
		}
		// What decodes encodes to what decodes to the same.
		again, err := Decode("f", Encode(es))
		if err != nil || !reflect.DeepEqual(normal(again), normal(es)) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, es, again)
		}
	})
}

// normal makes nil and empty lists alike and times comparable.
func normal(es []Entry) []Entry {
	out := make([]Entry, len(es))
	for i, e := range es {
		e.First, e.Last = e.First.UTC(), e.Last.UTC()
		if len(e.Files) == 0 {
			e.Files = nil
		}
		if len(e.Users) == 0 {
			e.Users = nil
		}
		if len(e.Containers) == 0 {
			e.Containers = nil
		}
		out[i] = e
	}
	return out
}
