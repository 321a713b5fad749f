package policy

import (
	"fmt"
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// ruleIn compiles one filter in a profile of the given mode.
func ruleIn(t *testing.T, mode, filter string) *Rule {
	t.Helper()
	cfg, err := Parse("t.yaml", []byte(fmt.Sprintf("mode: %s\nprofiles:\n  - name: p\n    filters:\n      - %s\n", mode, filter)))
	if err != nil {
		t.Fatalf("%v\n%s", err, filter)
	}
	p, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p.Rules[0]
}

// judge runs Judge to the end, answering its needs from the facts given,
// and returns the kind and the needs it asked for.
func judge(t *testing.T, r *Rule, exeAllowed bool, loader fsmon.LoaderEnv, comm, base string) (fsmon.Kind, Need) {
	t.Helper()
	var s Subject
	var asked Need
	for range 4 {
		k, need := Judge(r, &s)
		if need == 0 {
			return k, asked
		}
		if asked&need != 0 {
			t.Fatalf("Judge asked twice for %v", need)
		}
		asked |= need
		if need&NeedExe != 0 {
			s.ExeAllowed = FactOf(exeAllowed)
		}
		if need&NeedNames != 0 {
			s.NamesKnown, s.Comm, s.ExeBase = true, comm, base
		}
		if need&NeedLoader != 0 {
			s.LoaderKnown, s.Loader = true, loader
		}
	}
	t.Fatal("Judge kept asking")
	return 0, 0
}

// TestJudgeTable: every mode × behaviour × allow-entry kind × match or
// no match, with report_access off and on.
func TestJudgeTable(t *testing.T) {
	outsider := map[string]fsmon.Kind{"protect": fsmon.KindDenied, "monitor": fsmon.KindViolation, "learn": fsmon.KindLearned}
	type opener struct {
		name        string
		exe         bool // the executable is an entry's
		loader      fsmon.LoaderEnv
		comm, base  string // names
		matchesExe  bool   // in the list by executable
		matchesName bool   // in the list by name
	}
	openers := []opener{
		{name: "by exe", exe: true, comm: "x", base: "x", matchesExe: true},
		{name: "by comm", comm: "nginx", base: "x", matchesName: true},
		{name: "by exe base name", comm: "x", base: "nginx", matchesName: true},
		{name: "empty names", comm: "", base: ""},
		{name: "outsider", comm: "cat", base: "cat"},
		// The loader told to load other code: not the program an
		// executable entry names; name entries are unaffected.
		{name: "by exe, LD_PRELOAD", exe: true, loader: fsmon.LoaderPreload, comm: "x", base: "x"},
		{name: "by exe, LD_AUDIT", exe: true, loader: fsmon.LoaderAudit, comm: "x", base: "x"},
		{name: "by exe, LD_LIBRARY_PATH", exe: true, loader: fsmon.LoaderLibraryPath, comm: "x", base: "x"},
		{name: "by exe, environment not all scanned", exe: true, loader: fsmon.LoaderTruncated, comm: "x", base: "x"},
		{name: "by exe, environment unreadable", exe: true, loader: fsmon.LoaderUnreadable, comm: "x", base: "x"},
		{name: "by exe and name, LD_PRELOAD", exe: true, loader: fsmon.LoaderPreload, comm: "nginx", base: "nginx", matchesName: true},
		{name: "by exe, LD_PRELOAD in secure-exec", exe: true, loader: fsmon.LoaderPreload | fsmon.LoaderSecure, comm: "x", base: "x", matchesExe: true},
		{name: "by name, LD_PRELOAD", loader: fsmon.LoaderPreload, comm: "nginx", base: "x", matchesName: true},
	}
	lists := []struct {
		name        string
		allow       string
		exes, names bool
	}{
		{"no list", "[]", false, false},
		{"exe entry", "[/usr/sbin/nginx]", true, false},
		{"name entry", "[nginx]", false, true},
		{"both", "[/usr/sbin/nginx, nginx]", true, true},
	}
	for _, mode := range []string{"protect", "monitor", "learn"} {
		for _, behavior := range []string{"block", "monitor"} {
			for _, access := range []bool{false, true} {
				for _, l := range lists {
					if behavior == "block" && mode == "protect" && l.allow == "[]" {
						continue // denies root too: Parse refuses it
					}
					r := ruleIn(t, mode, fmt.Sprintf("{path: /f, behavior: %s, report_access: %v, allow: %s}", behavior, access, l.allow))
					for _, o := range openers {
						name := fmt.Sprintf("%s/%s/access=%v/%s/%s", mode, behavior, access, l.name, o.name)
						allowed := l.exes && o.matchesExe || l.names && o.matchesName
						var want fsmon.Kind
						switch {
						case behavior == "block" && !allowed:
							want = outsider[mode]
						case access:
							want = fsmon.KindAccess
						}
						got, asked := judge(t, r, o.exe, o.loader, o.comm, o.base)
						if got != want {
							t.Errorf("%s: %v, want %v", name, got, want)
						}
						// Facts are asked for only where they can matter.
						if behavior != "block" && asked != 0 {
							t.Errorf("%s: a monitor filter asked for %v", name, asked)
						}
						if asked&NeedExe != 0 && !l.exes {
							t.Errorf("%s: asked for the executable, the list has no executable entry", name)
						}
						if asked&NeedNames != 0 && (!l.names || l.exes && o.matchesExe) {
							t.Errorf("%s: asked for names needlessly", name)
						}
						if asked&NeedLoader != 0 && !(l.exes && o.exe) {
							t.Errorf("%s: asked for the loader's environment, no executable entry matched", name)
						}
					}
				}
			}
		}
	}
}

// TestSeverity: of several rules on one file, the most severe outcome
// wins whatever the order, so a protect-mode block filter is never
// outweighed by a monitor or learn filter of another profile.
func TestSeverity(t *testing.T) {
	order := []fsmon.Kind{fsmon.KindDenied, fsmon.KindViolation, fsmon.KindLearned, fsmon.KindAccess, 0}
	for i, hi := range order {
		for _, lo := range order[i+1:] {
			for _, ks := range [][]fsmon.Kind{{hi, lo}, {lo, hi}, {lo, hi, lo}} {
				var o Outcome
				for j, k := range ks {
					o.Add(k, j)
				}
				if o.Kind != hi {
					t.Errorf("%v: got %v, want %v", ks, o.Kind, hi)
				}
				if hi != 0 && ks[o.Rule] != hi {
					t.Errorf("%v: rule %d gave %v", ks, o.Rule, ks[o.Rule])
				}
			}
		}
	}
	var o Outcome
	o.Add(fsmon.KindViolation, 0)
	o.Add(fsmon.KindViolation, 1)
	if o.Rule != 0 {
		t.Errorf("of equals, rule %d won, want the first", o.Rule)
	}
	if o.Denies() {
		t.Error("a violation denies")
	}
	o.Add(fsmon.KindDenied, 2)
	if !o.Denies() {
		t.Error("denied does not deny")
	}
}

func TestFactOf(t *testing.T) {
	if FactOf(true) != Yes || FactOf(false) != No {
		t.Fatal("FactOf")
	}
}
