package collector

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// The cap is exact, one goroutine, no timing: the cap-th distinct value
// is admitted, the cap+1-th is "other", and so is every later new one;
// admitted values keep their own label; repeats and reserved values take
// no slot.
func TestLimiterCapExact(t *testing.T) {
	for _, max := range []int{1, 2, 3, 100} {
		t.Run(fmt.Sprint(max), func(t *testing.T) {
			l := newLimiter(max, "host")
			for i := range max {
				v := fmt.Sprintf("v%d", i)
				if got := l.value(v); got != v {
					t.Fatalf("distinct value %d of %d: %q, want it admitted", i+1, max, got)
				}
				// A repeat and a reserved value between two new ones
				// take no slot.
				if got := l.value(v); got != v {
					t.Fatalf("repeat of %q: %q", v, got)
				}
				if got := l.value("host"); got != "host" {
					t.Fatalf("reserved: %q", got)
				}
				if n := l.size(); n != i+1 {
					t.Fatalf("after %d distinct values the limiter holds %d", i+1, n)
				}
			}
			for i := max; i < max+3; i++ {
				if got := l.value(fmt.Sprintf("v%d", i)); got != "other" {
					t.Fatalf("distinct value %d with a cap of %d: %q, want other", i+1, max, got)
				}
			}
			for i := range max {
				if v := fmt.Sprintf("v%d", i); l.value(v) != v {
					t.Fatalf("admitted %q lost its label once the cap was reached", v)
				}
			}
			if n := l.size(); n != max {
				t.Fatalf("limiter holds %d values, want %d", n, max)
			}
		})
	}
}

// admit is the second look, under the write lock, that value takes when
// its first look found a free slot. Between the two looks another
// goroutine may take the last slot; admit must then say "other". This is
// that race made deterministic: the slot is taken, admit is called.
func TestLimiterAdmitLooksAgain(t *testing.T) {
	l := newLimiter(3)
	l.value("a")
	l.value("b")
	if got := l.admit("c"); got != "c" {
		t.Fatalf("admit with the last slot free: %q", got)
	}
	if got := l.admit("d"); got != "other" {
		t.Fatalf("admit with the cap reached: %q, want other", got)
	}
	if got := l.admit("a"); got != "a" {
		t.Fatalf("admit of a value admitted meanwhile: %q, want it kept", got)
	}
	if n := l.size(); n != 3 {
		t.Fatalf("limiter holds %d values, want 3", n)
	}
}

// Past the cap, and for a value already admitted, value answers under the
// read lock alone: it runs for every event on the report goroutine and
// must not queue behind scrapes or other writers. The test holds a read
// lock itself; a value that wanted the write lock would be stuck behind
// it, which TryRLock sees (a writer waiting makes it fail). No timing: the
// loop ends either way, when value returns or when it is seen waiting.
func TestLimiterNoWriteLockWhenDecided(t *testing.T) {
	l := newLimiter(2)
	l.value("a")
	l.value("b")
	for _, tc := range []struct{ v, want string }{{"c", "other"}, {"a", "a"}} {
		l.mu.RLock()
		res := make(chan string, 1)
		go func() { res <- l.value(tc.v) }()
		var got string
		writer := false
	wait:
		for {
			select {
			case got = <-res:
				break wait
			default:
			}
			if !l.mu.TryRLock() {
				writer = true
				break wait
			}
			l.mu.RUnlock()
			runtime.Gosched()
		}
		l.mu.RUnlock()
		if writer {
			got = <-res
			t.Errorf("value(%q) took the write lock with the cap reached", tc.v)
		}
		if got != tc.want {
			t.Errorf("value(%q) = %q, want %q", tc.v, got, tc.want)
		}
	}
}

// Through the metrics: with --metrics.container-cap=2 the first two
// containers denied get their own series, the third is "other". host
// takes no slot, and neither does a container named like one of the
// label values with a meaning of their own (doc.go: "host", "other" and
// "unknown" do not count against the cap).
func TestContainerCapExact(t *testing.T) {
	m := NewEventMetrics(2)
	deny := func(name string) {
		m.Handle(&fsmon.Event{Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Profile: "p", Filter: "f",
			Container: fsmon.Container{Name: name}})
	}
	deny("")      // the host
	deny("other") // a container named other: counted with the overflow, no slot
	deny("unknown")
	deny("c1")
	deny("c1")
	deny("c2") // the cap-th: admitted
	deny("c3") // the cap+1-th: other
	deny("c4")
	deny("c2")
	const want = `# HELP fsmon_access_denied_total Opens denied with EPERM by a block filter in protect mode, by profile, filter, container (name, short id, host or other) and the pod's namespace (empty outside Kubernetes pods).
# TYPE fsmon_access_denied_total counter
fsmon_access_denied_total{container="c1",filter="f",namespace="",profile="p"} 2
fsmon_access_denied_total{container="c2",filter="f",namespace="",profile="p"} 2
fsmon_access_denied_total{container="host",filter="f",namespace="",profile="p"} 1
fsmon_access_denied_total{container="other",filter="f",namespace="",profile="p"} 3
fsmon_access_denied_total{container="unknown",filter="f",namespace="",profile="p"} 1
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), "fsmon_access_denied_total"); err != nil {
		t.Fatal(err)
	}
}

// profile and filter: LabelCap distinct values, the next one is other.
func TestProfileFilterCapExact(t *testing.T) {
	m := NewEventMetrics(0)
	for i := range LabelCap + 1 {
		m.Handle(&fsmon.Event{Kind: fsmon.KindViolation, Op: fsmon.OpOpen,
			Profile: fmt.Sprintf("p%d", i), Filter: fmt.Sprintf("f%d", i)})
	}
	last := fmt.Sprint(LabelCap - 1)
	if got := testutil.ToFloat64(m.violations.WithLabelValues("p"+last, "f"+last, "host", "")); got != 1 {
		t.Errorf("the LabelCap-th profile and filter: %v, want their own series at 1", got)
	}
	if got := testutil.ToFloat64(m.violations.WithLabelValues("other", "other", "host", "")); got != 1 {
		t.Errorf("the LabelCap+1-th profile and filter: %v under other, want 1", got)
	}
	if n := testutil.CollectAndCount(m, "fsmon_access_violations_total"); n != LabelCap+1 {
		t.Errorf("%d series, want %d", n, LabelCap+1)
	}
}
