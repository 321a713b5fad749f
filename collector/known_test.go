package collector

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// TestSetKnown: known label sets are exported at 0; a later
// configuration drops the series of removed profiles (counted or not)
// and the 0 series it no longer lists, adds its own, and keeps counts of
// the profiles it still has.
func TestSetKnown(t *testing.T) {
	m := NewEventMetrics(100)
	m.SetKnown(fsmon.KnownSeries{
		Profiles: []string{"guard", "watch"},
		Events: []fsmon.EventSeries{
			{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "guard"},
			{Kind: fsmon.KindChange, Op: fsmon.OpWrite, Profile: "watch"},
			{Kind: fsmon.KindViolation, Op: fsmon.OpOpen, Profile: "watch"},
		},
		Filters: []fsmon.FilterSeries{
			{Kind: fsmon.KindDenied, Profile: "guard", Filter: "secret"},
			{Kind: fsmon.KindDenied, Profile: "guard", Filter: "spare"},
			{Kind: fsmon.KindViolation, Profile: "watch", Filter: "key"},
		},
	})
	if err := testutil.CollectAndCompare(m, strings.NewReader(`
# HELP fsmon_access_denied_total Opens denied with EPERM by a block filter in protect mode, by profile, filter, container (name, short id, host or other) and the pod's namespace (empty outside Kubernetes pods).
# TYPE fsmon_access_denied_total counter
fsmon_access_denied_total{container="host",filter="secret",namespace="",profile="guard"} 0
fsmon_access_denied_total{container="host",filter="spare",namespace="",profile="guard"} 0
# HELP fsmon_access_violations_total Opens a block filter would have denied, allowed because the profile is in monitor mode, by profile, filter, container (name, short id, host or other) and the pod's namespace (empty outside Kubernetes pods).
# TYPE fsmon_access_violations_total counter
fsmon_access_violations_total{container="host",filter="key",namespace="",profile="watch"} 0
# HELP fsmon_events_total File events reported, by event (access, change, violation, denied, learned, timeout), operation and profile; counted before folding, so a folded report of n events adds n.
# TYPE fsmon_events_total counter
fsmon_events_total{event="change",op="write",profile="watch"} 0
fsmon_events_total{event="denied",op="open",profile="guard"} 0
fsmon_events_total{event="violation",op="open",profile="watch"} 0
`)); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []fsmon.Event{
		{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "guard", Filter: "secret"},
		{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "guard", Filter: "secret", Container: fsmon.Container{Name: "web-1"}},
		{Kind: fsmon.KindViolation, Op: fsmon.OpOpen, Profile: "watch", Filter: "key", Count: 2},
		{Kind: fsmon.KindTimeout, Op: fsmon.OpOpen},
	} {
		m.Handle(&ev)
	}
	// watch is gone; guard is in monitor mode now and its spare filter
	// is gone.
	m.SetKnown(fsmon.KnownSeries{
		Profiles: []string{"guard"},
		Events: []fsmon.EventSeries{
			{Kind: fsmon.KindViolation, Op: fsmon.OpOpen, Profile: "guard"},
			{Kind: fsmon.KindChange, Op: fsmon.OpWrite, Profile: "guard"},
		},
		Filters: []fsmon.FilterSeries{{Kind: fsmon.KindViolation, Profile: "guard", Filter: "secret"}},
	})
	if err := testutil.CollectAndCompare(m, strings.NewReader(`
# HELP fsmon_access_denied_total Opens denied with EPERM by a block filter in protect mode, by profile, filter, container (name, short id, host or other) and the pod's namespace (empty outside Kubernetes pods).
# TYPE fsmon_access_denied_total counter
fsmon_access_denied_total{container="host",filter="secret",namespace="",profile="guard"} 1
fsmon_access_denied_total{container="web-1",filter="secret",namespace="",profile="guard"} 1
# HELP fsmon_access_violations_total Opens a block filter would have denied, allowed because the profile is in monitor mode, by profile, filter, container (name, short id, host or other) and the pod's namespace (empty outside Kubernetes pods).
# TYPE fsmon_access_violations_total counter
fsmon_access_violations_total{container="host",filter="secret",namespace="",profile="guard"} 0
# HELP fsmon_events_total File events reported, by event (access, change, violation, denied, learned, timeout), operation and profile; counted before folding, so a folded report of n events adds n.
# TYPE fsmon_events_total counter
fsmon_events_total{event="change",op="write",profile="guard"} 0
fsmon_events_total{event="denied",op="open",profile="guard"} 2
fsmon_events_total{event="timeout",op="open",profile="unknown"} 1
fsmon_events_total{event="violation",op="open",profile="guard"} 0
`)); err != nil {
		t.Fatal(err)
	}
}
