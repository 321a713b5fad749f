package collector

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

const fullID = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b"

func TestEventMetrics(t *testing.T) {
	m := NewEventMetrics(100)
	for _, ev := range []fsmon.Event{
		{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "host", Filter: "shadow", Path: "/etc/shadow"},
		{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "host", Filter: "shadow", Path: "/etc/shadow", Count: 3},
		{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "web", Filter: "tls-keys", Container: fsmon.Container{ID: fullID, Name: "web-1"}},
		{Kind: fsmon.KindViolation, Op: fsmon.OpOpen, Profile: "web", Filter: "tls-keys", Container: fsmon.Container{ID: fullID}},
		{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "pods", Filter: "token", Container: fsmon.Container{ID: fullID, Name: "app",
			Pod: fsmon.Pod{Namespace: "prod", Name: "api-1", UID: "u", ContainerName: "app"}}},
		{Kind: fsmon.KindViolation, Op: fsmon.OpOpen, Profile: "pods", Filter: "token", Count: 2, Container: fsmon.Container{ID: fullID, Name: "app",
			Pod: fsmon.Pod{Namespace: "batch", Name: "job-1", UID: "v", ContainerName: "app"}}},
		{Kind: fsmon.KindChange, Op: fsmon.OpWrite, Profile: "host", Filter: "passwd", Count: 2},
		{Kind: fsmon.KindLearned, Op: fsmon.OpExec, Profile: "host", Filter: "shadow"},
		{Kind: fsmon.KindAccess}, // nothing known: "unknown" labels, never empty ones
	} {
		m.Handle(&ev)
	}
	m.Handle(nil)

	const want = `# HELP fsmon_access_denied_total Opens denied with EPERM by a block filter in protect mode, by profile, filter, container (name, short id, host or other) and the pod's namespace (empty outside Kubernetes pods).
# TYPE fsmon_access_denied_total counter
fsmon_access_denied_total{container="app",filter="token",namespace="prod",profile="pods"} 1
fsmon_access_denied_total{container="host",filter="shadow",namespace="",profile="host"} 4
fsmon_access_denied_total{container="web-1",filter="tls-keys",namespace="",profile="web"} 1
# HELP fsmon_access_violations_total Opens a block filter would have denied, allowed because the profile is in monitor mode, by profile, filter, container (name, short id, host or other) and the pod's namespace (empty outside Kubernetes pods).
# TYPE fsmon_access_violations_total counter
fsmon_access_violations_total{container="4f3c2b1a0e9d",filter="tls-keys",namespace="",profile="web"} 1
fsmon_access_violations_total{container="app",filter="token",namespace="batch",profile="pods"} 2
# HELP fsmon_changes_total Changes of watched files reported (change events, those made while the daemon was down included), by profile, filter and operation; counted before folding.
# TYPE fsmon_changes_total counter
fsmon_changes_total{filter="passwd",op="write",profile="host"} 2
# HELP fsmon_events_total File events reported, by event (access, change, violation, denied, learned, timeout), operation and profile; counted before folding, so a folded report of n events adds n.
# TYPE fsmon_events_total counter
fsmon_events_total{event="access",op="unknown",profile="unknown"} 1
fsmon_events_total{event="change",op="write",profile="host"} 2
fsmon_events_total{event="denied",op="open",profile="host"} 4
fsmon_events_total{event="denied",op="open",profile="pods"} 1
fsmon_events_total{event="denied",op="open",profile="web"} 1
fsmon_events_total{event="learned",op="exec",profile="host"} 1
fsmon_events_total{event="violation",op="open",profile="pods"} 2
fsmon_events_total{event="violation",op="open",profile="web"} 1
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestContainerLabel(t *testing.T) {
	for _, tc := range []struct {
		c    fsmon.Container
		want string
	}{
		{fsmon.Container{}, "host"},
		{fsmon.Container{ID: fullID, Name: "db"}, "db"},
		{fsmon.Container{ID: fullID}, "4f3c2b1a0e9d"},
		{fsmon.Container{ID: "abc"}, "abc"},
	} {
		if got := containerLabel(tc.c); got != tc.want {
			t.Errorf("containerLabel(%+v) = %q, want %q", tc.c, got, tc.want)
		}
	}
}

// 10,000 distinct files in 500 containers of pods in 500 namespaces: the
// series count is bounded by the container and namespace caps (plus
// "host" and "other"), never by files, containers or namespaces, and
// the limiters hold no more than the cap.
func TestCardinalityBounded(t *testing.T) {
	const containerCap = 100
	m := NewEventMetrics(containerCap)
	for i := range 10000 {
		c := i % 500
		kind := fsmon.KindDenied
		if (i/500)%2 == 1 { // every container sees both kinds
			kind = fsmon.KindViolation
		}
		m.Handle(&fsmon.Event{
			Kind: kind, Op: fsmon.OpOpen, Profile: "p", Filter: "f",
			Path:      fmt.Sprintf("/data/file-%d", i),
			Process:   fsmon.Process{PID: int32(1000 + i)},
			Container: fsmon.Container{ID: fmt.Sprintf("%064x", c), Name: fmt.Sprintf("c%d", c), Pod: fsmon.Pod{Namespace: fmt.Sprintf("ns%d", c)}},
		})
		m.Handle(&fsmon.Event{Kind: kind, Op: fsmon.OpOpen, Profile: "p", Filter: "f", Path: fmt.Sprintf("/host/file-%d", i)})
	}
	// Each of denied and violations: at most cap containers + host + other.
	for _, name := range []string{"fsmon_access_denied_total", "fsmon_access_violations_total"} {
		if n := testutil.CollectAndCount(m, name); n > containerCap+2 {
			t.Errorf("%s: %d series, want at most %d", name, n, containerCap+2)
		}
	}
	if n := testutil.CollectAndCount(m, "fsmon_events_total"); n != 2 {
		t.Errorf("fsmon_events_total: %d series, want 2 (denied, violation)", n)
	}
	if n := m.containers.size(); n != containerCap {
		t.Errorf("limiter holds %d values, want %d", n, containerCap)
	}
	if n := m.namespaces.size(); n != containerCap {
		t.Errorf("namespace limiter holds %d values, want %d", n, containerCap)
	}
	if got := testutil.ToFloat64(m.denied.WithLabelValues("p", "f", "other", "other")); got != 4000 {
		// 400 of the 500 containers and namespaces are past the cap, 10
		// denials each.
		t.Errorf(`denied{container="other",namespace="other"} = %v, want 4000`, got)
	}
	if got := testutil.ToFloat64(m.denied.WithLabelValues("p", "f", "host", "")); got != 5000 {
		t.Errorf(`denied{container="host",namespace=""} = %v, want 5000`, got)
	}
}

// The cap holds when many goroutines admit values at once.
func TestLimiterConcurrent(t *testing.T) {
	l := newLimiter(50, "host")
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 1000 {
				v := l.value(fmt.Sprintf("v%d-%d", g, i))
				if v == "" {
					t.Error("empty label value")
				}
				if l.value("host") != "host" {
					t.Error("reserved value not admitted")
				}
			}
		})
	}
	wg.Wait()
	if n := l.size(); n != 50 {
		t.Errorf("limiter admitted %d values, want 50", n)
	}
}

func TestLimiterEdges(t *testing.T) {
	l := newLimiter(0, "host")
	if got := l.value("web"); got != "other" {
		t.Errorf("cap 0: %q, want other", got)
	}
	if got := l.value("host"); got != "host" {
		t.Errorf("cap 0, host: %q", got)
	}
	if got := l.value(""); got != "unknown" {
		t.Errorf(`"": %q, want unknown`, got)
	}
	l = newLimiter(2)
	if got := l.value("a\xffb"); got != "a\uFFFDb" {
		t.Errorf("invalid UTF-8: %q", got)
	}
}

// Handle and Collect run on different goroutines in the daemon (report
// goroutine and scrapes); run under -race.
func TestEventMetricsConcurrentScrape(t *testing.T) {
	m := NewEventMetrics(10)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 5000 {
			m.Handle(&fsmon.Event{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "p", Filter: "f",
				Container: fsmon.Container{Name: fmt.Sprintf("c%d", i%40)}})
		}
	})
	wg.Go(func() {
		for range 50 {
			testutil.CollectAndCount(m)
		}
	})
	wg.Wait()
	if n := testutil.CollectAndCount(m, "fsmon_access_denied_total"); n != 11 {
		t.Errorf("%d series, want 11 (10 containers + other)", n)
	}
}

// Handle runs once per reported event on the report goroutine: it must
// not allocate once the series exist.
func TestHandleDoesNotAllocate(t *testing.T) {
	m := NewEventMetrics(10)
	ev := &fsmon.Event{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "p", Filter: "f",
		Container: fsmon.Container{ID: fullID}}
	m.Handle(ev)
	if n := testing.AllocsPerRun(1000, func() { m.Handle(ev) }); n > 0 {
		t.Errorf("Handle allocates %v times per event", n)
	}
}

func BenchmarkHandle(b *testing.B) {
	m := NewEventMetrics(DefaultContainerCap)
	ev := &fsmon.Event{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "p", Filter: "f",
		Container: fsmon.Container{Name: "web"}}
	b.ReportAllocs()
	for b.Loop() {
		m.Handle(ev)
	}
}
