package policy

import (
	"slices"
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

func TestKnownSeries(t *testing.T) {
	cfg, err := Parse("t.yaml", []byte(`
profiles:
  - name: guard
    host: true
    mode: protect
    filters:
      - name: shadow
        path: /etc/shadow
        behavior: block
        allow: [/usr/sbin/unix_chkpwd]
      - name: hosts
        path: /etc/hosts
        report_access: true
  - name: watch
    mode: monitor
    filters:
      - name: key
        path: /srv/key
        behavior: block
        allow: [nginx]
  - name: learner
    host: true
    mode: learn
    filters:
      - name: tok
        path: /srv/tok
        behavior: block
        allow: [x]
  - name: pods
    containers: {namespace: prod}
    mode: protect
    filters:
      - name: token
        path: /run/token
        behavior: block
        allow: [/app]
`))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	k := pol.KnownSeries()
	if want := []string{"guard", "watch", "learner", "pods"}; !slices.Equal(k.Profiles, want) {
		t.Errorf("profiles %v, want %v", k.Profiles, want)
	}
	// The host's filters: guard's deny, watch's violation (a profile with
	// no selector covers the host); none for learn mode, none for a
	// container profile, none for a filter that does not block.
	wantFilters := []fsmon.FilterSeries{
		{Kind: fsmon.KindDenied, Profile: "guard", Filter: "shadow"},
		{Kind: fsmon.KindViolation, Profile: "watch", Filter: "key"},
	}
	if !slices.Equal(k.Filters, wantFilters) {
		t.Errorf("filters %v, want %v", k.Filters, wantFilters)
	}
	has := func(kind fsmon.Kind, op fsmon.Op, profile string) bool {
		return slices.Contains(k.Events, fsmon.EventSeries{Kind: kind, Op: op, Profile: profile})
	}
	for _, e := range []fsmon.EventSeries{
		{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "guard"},
		{Kind: fsmon.KindAccess, Op: fsmon.OpOpen, Profile: "guard"},
		{Kind: fsmon.KindViolation, Op: fsmon.OpOpen, Profile: "watch"},
		{Kind: fsmon.KindLearned, Op: fsmon.OpOpen, Profile: "learner"},
		{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "pods"},
	} {
		if !has(e.Kind, e.Op, e.Profile) {
			t.Errorf("events lack %v", e)
		}
	}
	for _, p := range k.Profiles {
		for _, op := range []fsmon.Op{fsmon.OpWrite, fsmon.OpCreate, fsmon.OpDelete, fsmon.OpRename, fsmon.OpAttrib} {
			if !has(fsmon.KindChange, op, p) {
				t.Errorf("events lack change %v of %s", op, p)
			}
		}
	}
	for _, e := range []fsmon.EventSeries{
		{Kind: fsmon.KindViolation, Op: fsmon.OpOpen, Profile: "guard"},
		{Kind: fsmon.KindAccess, Op: fsmon.OpOpen, Profile: "watch"},
		{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "learner"},
	} {
		if has(e.Kind, e.Op, e.Profile) {
			t.Errorf("events have %v, which the configuration cannot produce", e)
		}
	}
	seen := map[fsmon.EventSeries]bool{}
	for _, e := range k.Events {
		if seen[e] {
			t.Errorf("%v listed twice", e)
		}
		seen[e] = true
	}
}
