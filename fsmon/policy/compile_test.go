package policy

import (
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// TestCompileTwoProfilesOnOneFile: filters of two profiles on the same
// path stay two rules, each with its own profile, mode, behaviour and
// allow list, numbered in the order of the file; the engine's decision
// weighs them against each other.
func TestCompileTwoProfilesOnOneFile(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte(`
mode: learn
profiles:
  - name: guard
    host: true
    mode: protect
    filters:
      - name: g
        path: /srv/f
        behavior: block
        allow: [/usr/bin/head]
  - name: other
    host: true
    filters:
      - name: o
        path: /srv/f
        behavior: block
        allow: [tail]
  - name: watch
    host: true
    mode: monitor
    filters:
      - path: /srv/f
        report_access: true
`))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rules) != 3 {
		t.Fatalf("%d rules, want 3", len(p.Rules))
	}
	for i, want := range []struct {
		profile, name string
		mode          fsmon.Mode
		blocks        bool
		access        bool
		exes          int
		names         bool
	}{
		{"guard", "g", fsmon.ModeProtect, true, false, 1, false},
		{"other", "o", fsmon.ModeLearn, true, false, 0, true}, // the file's mode
		{"watch", "/srv/f", fsmon.ModeMonitor, false, true, 0, false},
	} {
		r := p.Rules[i]
		if r.ID != i || r.Profile.Name != want.profile || r.Name != want.name || r.Mode != want.mode ||
			r.Blocks() != want.blocks || r.ReportAccess != want.access || len(r.AllowExePaths()) != want.exes || r.HasNames() != want.names {
			t.Errorf("rule %d: id %d %s/%s mode %s blocks %v access %v exes %v names %v, want %+v",
				i, r.ID, r.Profile.Name, r.Name, r.Mode, r.Blocks(), r.ReportAccess, r.AllowExePaths(), r.HasNames(), want)
		}
		if !r.Profile.AppliesToHost() || len(r.Profile.Rules) != 1 || r.Profile.Rules[0] != r {
			t.Errorf("rule %d: profile %+v", i, r.Profile)
		}
		// Both cover the same file, from the same directory.
		if !covers(r, "/srv/f") || covers(r, "/srv/g") {
			t.Errorf("rule %d: coverage of /srv/f", i)
		}
	}
	n := 0
	for _, r := range p.Rules {
		if r.Blocks() {
			n += r.AllowEntries()
		}
	}
	if n != 2 {
		t.Errorf("allow entries in force %d, want 2", n)
	}
}
