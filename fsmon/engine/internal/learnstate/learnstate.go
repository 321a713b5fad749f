// Package learnstate is the learned set: who opened the files of block
// filters in learn mode, one entry per (profile, filter, executable),
// with what a person needs to review it (the files, how often, when,
// as which users, in which containers). It is kept in memory, bounded,
// and in a file (--learn.state-file) across restarts and reloads; the
// file is kept by package statefile as the allow list state is.
//
// The entries are what the daemon reported as learned events: the
// engine hands each such event to Observe from its report goroutine, so
// the permission loop never waits for the set.
package learnstate

import (
	"encoding/json"
	"fmt"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/statefile"
)

// FileName is the state file's name in --state.dir when
// --learn.state-file does not name one.
const FileName = "learned.json"

const (
	version = 1
	// MaxBytes bounds the file: far above what MaxEntries entries with
	// every list full take (about 4 KiB each).
	MaxBytes = 32 << 20
	// MaxEntries bounds the set; an executable learned past it is not
	// kept (Set.Dropped counts them) and the generated configuration
	// then lacks it, which monitor mode shows as a violation.
	MaxEntries = 4096
	// MaxFiles, MaxUsers and MaxContainers bound the lists of one
	// entry: the first ones seen are kept, MoreFiles says there were
	// more files.
	MaxFiles      = 16
	MaxUsers      = 16
	MaxContainers = 16
	// maxString bounds each string of the file.
	maxString = 4096
)

// Key names an entry: the filter of a profile an executable opened
// files of.
type Key struct {
	Profile, Filter, Executable string
}

// User is a user a learned process ran as.
type User struct {
	ID   int64  `json:"id"`
	Name string `json:"name,omitempty"`
}

// Container is a container a learned process ran in, as its runtime
// names it.
type Container struct {
	ID           string `json:"id"`
	Name         string `json:"name,omitempty"`
	Image        string `json:"image,omitempty"`
	K8sNamespace string `json:"k8s_namespace,omitempty"`
	K8sPod       string `json:"k8s_pod,omitempty"`
}

// Entry is what was learned of one executable on one filter.
type Entry struct {
	Profile    string `json:"profile"`
	Filter     string `json:"filter"`
	Executable string `json:"executable"` // as the process saw it; empty when it could not be read
	// Count is the learned events, folded ones counted each.
	Count uint64    `json:"count"`
	First time.Time `json:"first_seen"`
	Last  time.Time `json:"last_seen"`
	// Files are the files opened, the first MaxFiles; MoreFiles says
	// others were opened too.
	Files     []string `json:"files"`
	MoreFiles bool     `json:"more_files,omitempty"`
	Users     []User   `json:"users"`
	// Host says it was seen on the host; Containers lists the
	// containers it was seen in.
	Host       bool        `json:"host,omitempty"`
	Containers []Container `json:"containers,omitempty"`
}

// Key is the entry's key.
func (e *Entry) Key() Key { return Key{e.Profile, e.Filter, e.Executable} }

func (e *Entry) clone() Entry {
	c := *e
	c.Files = append([]string(nil), e.Files...)
	c.Users = append([]User(nil), e.Users...)
	c.Containers = append([]Container(nil), e.Containers...)
	return c
}

// Set is the learned set; safe for concurrent use.
type Set struct {
	mu      sync.Mutex
	m       map[Key]*Entry
	changed bool
	dropped uint64
}

// NewSet returns a set holding entries (a loaded file's).
func NewSet(entries []Entry) *Set {
	s := &Set{m: make(map[Key]*Entry, len(entries))}
	for i := range entries {
		e := entries[i].clone()
		s.m[e.Key()] = &e
	}
	return s
}

// Observe adds a learned event to the set and reports whether the set
// changed; events of other kinds are no business of the set.
func (s *Set) Observe(ev *fsmon.Event) bool {
	if ev.Kind != fsmon.KindLearned {
		return false
	}
	k := Key{ev.Profile, ev.Filter, ev.Process.ExecutablePath}
	n := uint64(1)
	if ev.Count > 1 {
		n = uint64(ev.Count)
	}
	t := ev.Time.UTC()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[k]
	if e == nil {
		if len(s.m) >= MaxEntries {
			s.dropped++
			return false
		}
		e = &Entry{Profile: k.Profile, Filter: k.Filter, Executable: k.Executable, First: t, Last: t}
		s.m[k] = e
	}
	e.Count += n
	if t.Before(e.First) {
		e.First = t
	}
	if t.After(e.Last) {
		e.Last = t
	}
	if ev.Path != "" && !contains(e.Files, ev.Path) {
		if len(e.Files) < MaxFiles {
			e.Files = append(e.Files, ev.Path)
		} else {
			e.MoreFiles = true
		}
	}
	if uid := ev.Process.UserID; uid >= 0 && len(e.Users) < MaxUsers && !hasUser(e.Users, uid) {
		e.Users = append(e.Users, User{ID: uid, Name: ev.Process.UserName})
	}
	if c := ev.Container; c.ID == "" {
		e.Host = true
	} else if len(e.Containers) < MaxContainers && !hasContainer(e.Containers, c.ID) {
		e.Containers = append(e.Containers, Container{ID: c.ID, Name: c.Name, Image: c.Image, K8sNamespace: c.Pod.Namespace, K8sPod: c.Pod.Name})
	}
	s.changed = true
	return true
}

// Retain drops the entries whose (profile, filter) keep refuses: the
// filters a reload removed. It returns how many it dropped.
func (s *Set) Retain(keep func(profile, filter string) bool) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k := range s.m {
		if !keep(k.Profile, k.Filter) {
			delete(s.m, k)
			n++
		}
	}
	if n > 0 {
		s.changed = true
	}
	return n
}

// Entries returns a copy of the set, sorted by profile, filter and
// executable.
func (s *Set) Entries() []Entry {
	s.mu.Lock()
	out := make([]Entry, 0, len(s.m))
	for _, e := range s.m {
		out = append(out, e.clone())
	}
	s.mu.Unlock()
	sortEntries(out)
	return out
}

// Dropped is how many new entries found the set full.
func (s *Set) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// EncodeChanged is the file's content when the set changed since it
// was last encoded, else nil (statefile.Poller's encode).
func (s *Set) EncodeChanged() []byte {
	s.mu.Lock()
	if !s.changed {
		s.mu.Unlock()
		return nil
	}
	s.changed = false
	s.mu.Unlock()
	return Encode(s.Entries())
}

func sortEntries(es []Entry) {
	sort.Slice(es, func(i, j int) bool {
		a, b := es[i].Key(), es[j].Key()
		if a.Profile != b.Profile {
			return a.Profile < b.Profile
		}
		if a.Filter != b.Filter {
			return a.Filter < b.Filter
		}
		return a.Executable < b.Executable
	})
}

type fileJSON struct {
	Version int     `json:"version"`
	Entries []Entry `json:"entries"`
}

// Encode is the file's content for es.
func Encode(es []Entry) []byte {
	f := fileJSON{Version: version, Entries: es}
	if f.Entries == nil {
		f.Entries = []Entry{}
	}
	b, _ := json.MarshalIndent(f, "", "  ") // nothing in it can fail to encode
	return append(b, '\n')
}

// Decode parses a state file's content; name is the file's, for errors,
// which say what is wrong and where.
func Decode(name string, b []byte) ([]Entry, error) {
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, MaxBytes)
	}
	var f fileJSON
	if err := statefile.DecodeJSON(name, b, &f); err != nil {
		return nil, err
	}
	if f.Version != version {
		return nil, fmt.Errorf("%s: version %d, this daemon reads version %d of the learned set (is it another file?)", name, f.Version, version)
	}
	if len(f.Entries) > MaxEntries {
		return nil, fmt.Errorf("%s: %d entries, at most %d", name, len(f.Entries), MaxEntries)
	}
	seen := make(map[Key]int, len(f.Entries))
	for i := range f.Entries {
		e := &f.Entries[i]
		if err := check(e); err != nil {
			return nil, fmt.Errorf("%s: entry %d: %w", name, i+1, err)
		}
		if first, dup := seen[e.Key()]; dup {
			return nil, fmt.Errorf("%s: entry %d: profile %q, filter %q, executable %q twice (first: entry %d)", name, i+1, e.Profile, e.Filter, e.Executable, first)
		}
		seen[e.Key()] = i + 1
	}
	sortEntries(f.Entries)
	return f.Entries, nil
}

// check validates one entry of a file.
func check(e *Entry) error {
	switch {
	case !goodName(e.Profile):
		return fmt.Errorf("profile %q is empty, too long or holds a control character", e.Profile)
	case !goodName(e.Filter):
		return fmt.Errorf("filter %q is empty, too long or holds a control character", e.Filter)
	case e.Executable != "" && !goodPath(e.Executable):
		return fmt.Errorf("executable %q is not a clean absolute path", e.Executable)
	case e.Count == 0:
		return fmt.Errorf("count is 0")
	case e.First.IsZero() || e.Last.Before(e.First):
		return fmt.Errorf("first_seen %s and last_seen %s: want first_seen set and not after last_seen", e.First.Format(time.RFC3339), e.Last.Format(time.RFC3339))
	case len(e.Files) > MaxFiles:
		return fmt.Errorf("%d files, at most %d", len(e.Files), MaxFiles)
	case len(e.Users) > MaxUsers:
		return fmt.Errorf("%d users, at most %d", len(e.Users), MaxUsers)
	case len(e.Containers) > MaxContainers:
		return fmt.Errorf("%d containers, at most %d", len(e.Containers), MaxContainers)
	}
	for _, f := range e.Files {
		if len(f) > maxString || !strings.HasPrefix(f, "/") || strings.ContainsRune(f, 0) {
			return fmt.Errorf("file %.80q is not an absolute path", f)
		}
	}
	for _, u := range e.Users {
		if u.ID < 0 || len(u.Name) > maxString {
			return fmt.Errorf("user %d (%.80q) is not a user id and name", u.ID, u.Name)
		}
	}
	for _, c := range e.Containers {
		if c.ID == "" || len(c.ID)+len(c.Name)+len(c.Image)+len(c.K8sNamespace)+len(c.K8sPod) > maxString {
			return fmt.Errorf("container %.80q: no id, or too long", c.ID)
		}
	}
	return nil
}

func goodName(s string) bool {
	return s != "" && len(s) <= maxString && strings.IndexFunc(s, unicode.IsControl) < 0
}

func goodPath(s string) bool {
	return len(s) <= maxString && strings.HasPrefix(s, "/") && path.Clean(s) == s && strings.IndexFunc(s, unicode.IsControl) < 0
}

// Load reads the learned set's file (statefile.ReadAll: a missing file
// is an empty set; one that others could write is refused).
func Load(name string) ([]Entry, error) {
	b, err := statefile.ReadAll(filepath.Dir(name), filepath.Base(name), MaxBytes)
	if err != nil || b == nil {
		return nil, err
	}
	return Decode(name, b)
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func hasUser(l []User, id int64) bool {
	for _, u := range l {
		if u.ID == id {
			return true
		}
	}
	return false
}

func hasContainer(l []Container, id string) bool {
	for _, c := range l {
		if c.ID == id {
			return true
		}
	}
	return false
}
