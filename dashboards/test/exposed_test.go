package test

import (
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/fsmon/fsmon_exporter/collector"
	"github.com/fsmon/fsmon_exporter/fsmon"
)

// Labels Prometheus attaches to every scraped series, and the names it
// synthesizes for every target.
var (
	targetLabels    = []string{"job", "instance"}
	syntheticSeries = map[string][]string{
		"up":                                    nil,
		"scrape_duration_seconds":               nil,
		"scrape_samples_scraped":                nil,
		"scrape_series_added":                   nil,
		"scrape_samples_post_metric_relabeling": nil,
	}
)

// series is what the exporter exposes under one series name (a histogram
// family gives three: _bucket, _sum and _count).
type series struct {
	family string
	typ    dto.MetricType
	labels map[string]map[string]bool // label name -> values seen
}

// fakeState is a StateSource with every map of the snapshot filled, so
// every labelled state metric has series.
type fakeState struct{}

func (fakeState) Snapshot() fsmon.State {
	marks := map[fsmon.MarkType]int{}
	for i, t := range fsmon.MarkTypes {
		marks[t] = i + 1
	}
	return fsmon.State{
		Groups: []fsmon.GroupState{
			{Name: "host", Marks: marks, InotifyWatches: 3},
			{Name: "web-1", ContainerID: strings.Repeat("ab", 32), Marks: marks, InotifyWatches: 2},
		},
		PendingEvents:     1,
		Marks:             marks,
		Rules:             4,
		InotifyWatches:    5,
		InotifyLimit:      8192,
		Overflows:         map[fsmon.OverflowSource]uint64{fsmon.OverflowFanotify: 1, fsmon.OverflowInotify: 2},
		Drops:             map[fsmon.DropStage]uint64{fsmon.DropReportQueue: 1, fsmon.DropExport: 2, fsmon.DropKernel: 3},
		DecisionTimeouts:  map[fsmon.Answer]uint64{fsmon.AnswerAllow: 1},
		PermissionEvents:  10,
		NotifyEvents:      20,
		Ready:             true,
		Unjudged:          []fsmon.FilterCount{{Profile: "host", Filter: "shadow", Count: 1}},
		WithoutPreContent: []fsmon.FilterCount{{Profile: "host", Filter: "shm", Count: 1}},
		ProfileGroups:     []fsmon.ProfileGroups{{Profile: "host", Groups: 1}, {Profile: "web", Groups: 1}},
		Decisions:         fakeState{}.DecisionHistogram(),
	}
}

// DecisionHistogram serves collectors that read the histogram through
// collector.DecisionSource rather than State.Decisions.
func (fakeState) DecisionHistogram() fsmon.HistogramSnapshot {
	b := map[float64]uint64{}
	for i, ub := range fsmon.DecisionBuckets {
		b[ub] = uint64(i)
	}
	return fsmon.HistogramSnapshot{Count: uint64(len(fsmon.DecisionBuckets)), Sum: 0.5, Buckets: b}
}

// exposedSeries registers the exporter's collectors exactly as the daemon
// does (collector.Register, plus the Go and process collectors), feeds one
// event of every kind and operation so the counter vectors have series,
// gathers, and returns the series names with their labels.
func exposedSeries(t testing.TB) map[string]*series {
	t.Helper()
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.DiscardHandler)
	events := collector.NewEventMetrics(collector.DefaultContainerCap)
	reload, err := collector.Register(reg, fakeState{}, events, logger)
	if err != nil {
		t.Fatalf("collector.Register: %v", err)
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	reload.Set(true, time.Now())
	for _, k := range fsmon.Kinds {
		for _, op := range fsmon.Ops {
			events.Handle(&fsmon.Event{
				Time: time.Now(), Kind: k, Op: op, Mode: fsmon.ModeProtect,
				Profile: "host", Filter: "shadow", Path: "/etc/shadow", Count: 1,
				Decision: 3 * time.Microsecond,
			})
			events.Handle(&fsmon.Event{
				Time: time.Now(), Kind: k, Op: op, Mode: fsmon.ModeMonitor,
				Profile: "web", Filter: "tls-keys", Path: "/etc/ssl/private/key.pem", Count: 2,
				Container: fsmon.Container{ID: strings.Repeat("cd", 32), Name: "web-1"},
			})
			events.Handle(&fsmon.Event{
				Time: time.Now(), Kind: k, Op: op, Mode: fsmon.ModeProtect,
				Profile: "pods", Filter: "token", Path: "/var/run/secrets/token", Count: 1,
				Container: fsmon.Container{ID: strings.Repeat("ef", 32), Name: "app", Image: "registry/app:2",
					Pod: fsmon.Pod{Namespace: "prod", Name: "api-1", UID: "u-1", ContainerName: "app"}},
			})
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering the exporter's metrics: %v", err)
	}
	out := map[string]*series{}
	add := func(name, family string, typ dto.MetricType, m *dto.Metric, extra ...string) {
		s := out[name]
		if s == nil {
			s = &series{family: family, typ: typ, labels: map[string]map[string]bool{}}
			out[name] = s
		}
		for _, lp := range m.GetLabel() {
			if s.labels[lp.GetName()] == nil {
				s.labels[lp.GetName()] = map[string]bool{}
			}
			s.labels[lp.GetName()][lp.GetValue()] = true
		}
		for _, l := range extra {
			if s.labels[l] == nil {
				s.labels[l] = map[string]bool{}
			}
		}
	}
	for _, mf := range mfs {
		name, typ := mf.GetName(), mf.GetType()
		for _, m := range mf.GetMetric() {
			switch typ {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
				add(name+"_bucket", name, typ, m, "le")
				add(name+"_sum", name, typ, m)
				add(name+"_count", name, typ, m)
			case dto.MetricType_SUMMARY:
				add(name, name, typ, m, "quantile")
				add(name+"_sum", name, typ, m)
				add(name+"_count", name, typ, m)
			default:
				add(name, name, typ, m)
			}
		}
	}
	for name := range syntheticSeries {
		out[name] = &series{family: name, typ: dto.MetricType_GAUGE, labels: map[string]map[string]bool{}}
	}
	for _, s := range out {
		for _, l := range targetLabels {
			if s.labels[l] == nil {
				s.labels[l] = map[string]bool{}
			}
		}
	}
	return out
}

func TestExposedSeriesCoverDesign(t *testing.T) {
	exp := exposedSeries(t)
	// The metrics of docs/metrics.md with their labels: the
	// dashboards and rules are written against these, so check the running
	// code really has them before trusting the other tests.
	want := map[string][]string{
		"fsmon_events_total":                                 {"event", "op", "profile"},
		"fsmon_access_denied_total":                          {"profile", "filter", "container", "namespace"},
		"fsmon_access_violations_total":                      {"profile", "filter", "container", "namespace"},
		"fsmon_groups":                                       nil,
		"fsmon_profile_groups":                               {"profile"},
		"fsmon_pending_file_events":                          nil,
		"fsmon_fanotify_marks":                               {"type"},
		"fsmon_fanotify_rules":                               nil,
		"fsmon_inotify_watches":                              nil,
		"fsmon_inotify_watches_limit":                        nil,
		"fsmon_kernel_queue_overflows_total":                 {"source"},
		"fsmon_events_dropped_total":                         {"stage"},
		"fsmon_permission_decision_duration_seconds_bucket":  {"le"},
		"fsmon_config_last_reload_successful":                nil,
		"fsmon_config_last_reload_success_timestamp_seconds": nil,
		"fsmon_build_info":                                   {"version", "revision", "goversion"},
		"fsmon_changes_total":                                {"profile", "filter", "op"},
		"fsmon_baseline_files":                               nil,
		"fsmon_file_hashes_total":                            nil,
		"fsmon_file_hashes_skipped_total":                    {"reason"},
		"fsmon_file_hash_seconds_total":                      nil,
	}
	for name, labels := range want {
		s, ok := exp[name]
		if !ok {
			t.Errorf("the exporter does not expose %s", name)
			continue
		}
		for _, l := range labels {
			if _, ok := s.labels[l]; !ok {
				t.Errorf("%s has no label %q (has %v)", name, l, keys(s.labels))
			}
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// checkExpr parses expr and checks every series name it selects, every
// label it matches on and every label it groups by against what the
// exporter exposes. It returns the parsed expression, or nil after
// reporting an error.
func checkExpr(t testing.TB, where, expr string, exp map[string]*series) parser.Expr {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: does not parse: %v\n\t%s", where, err, expr)
		return nil
	}
	var problems []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			problems = append(problems, checkSelector(n, exp)...)
		case *parser.AggregateExpr:
			if n.Without || len(n.Grouping) == 0 {
				break
			}
			have := labelsUnder(n.Expr, exp)
			for _, l := range n.Grouping {
				if !have[l] {
					problems = append(problems, fmt.Sprintf("groups by %q, which none of its series has (they have %v)", l, keys(have)))
				}
			}
		}
		return nil
	})
	for _, p := range problems {
		t.Errorf("%s: %s\n\t%s", where, p, expr)
	}
	if len(problems) > 0 {
		return nil
	}
	return e
}

func checkSelector(vs *parser.VectorSelector, exp map[string]*series) []string {
	name := vs.Name
	if name == "" {
		for _, m := range vs.LabelMatchers {
			if m.Name == "__name__" {
				name = m.Value
			}
		}
	}
	if name == "" {
		return []string{fmt.Sprintf("selector %s names no metric", vs)}
	}
	s, ok := exp[name]
	if !ok {
		return []string{fmt.Sprintf("selects %s, which the exporter does not expose", name)}
	}
	var problems []string
	for _, m := range vs.LabelMatchers {
		if m.Name == "__name__" {
			continue
		}
		values, ok := s.labels[m.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s has no label %q (has %v)", name, m.Name, keys(s.labels)))
			continue
		}
		// A literal value of a bounded label (event, op, stage, source,
		// type...) must be one the code produces.
		if m.Type.String() == "=" && !slices.Contains(targetLabels, m.Name) && len(values) > 0 && !values[m.Value] {
			problems = append(problems, fmt.Sprintf("%s{%s=%q}: the exporter never produces that value (it does %v)", name, m.Name, m.Value, keys(values)))
		}
	}
	return problems
}

// labelsUnder is every label any series selected under n has.
func labelsUnder(n parser.Node, exp map[string]*series) map[string]bool {
	have := map[string]bool{}
	parser.Inspect(n, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			if s, ok := exp[vs.Name]; ok {
				for l := range s.labels {
					have[l] = true
				}
			}
		}
		return nil
	})
	return have
}
