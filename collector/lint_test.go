package collector

import (
	"bytes"
	"os/exec"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// fullRegistry has everything Register exposes, with every labelled
// metric holding at least one series.
func fullRegistry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	events := NewEventMetrics(DefaultContainerCap)
	reload, err := Register(reg, sampleState(), events, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range fsmon.Kinds {
		events.Handle(&fsmon.Event{Kind: k, Op: fsmon.OpOpen, Profile: "host", Filter: "shadow"})
	}
	reload.Set(true, time.Now())
	return reg
}

// The metrics of docs/metrics.md, with their types.
var contract = map[string]string{
	"fsmon_events_total":                                 "COUNTER",
	"fsmon_access_denied_total":                          "COUNTER",
	"fsmon_access_violations_total":                      "COUNTER",
	"fsmon_groups":                                       "GAUGE",
	"fsmon_profile_groups":                               "GAUGE",
	"fsmon_pending_file_events":                          "GAUGE",
	"fsmon_fanotify_marks":                               "GAUGE",
	"fsmon_fanotify_rules":                               "GAUGE",
	"fsmon_inotify_watches":                              "GAUGE",
	"fsmon_inotify_watches_limit":                        "GAUGE",
	"fsmon_kernel_queue_overflows_total":                 "COUNTER",
	"fsmon_events_dropped_total":                         "COUNTER",
	"fsmon_permission_decision_duration_seconds":         "HISTOGRAM",
	"fsmon_config_last_reload_successful":                "GAUGE",
	"fsmon_config_last_reload_success_timestamp_seconds": "GAUGE",
	"fsmon_build_info":                                   "GAUGE",
}

func TestContract(t *testing.T) {
	mfs, err := fullRegistry(t).Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetType().String()
	}
	for name, typ := range contract {
		if g, ok := got[name]; !ok {
			t.Errorf("%s missing", name)
		} else if g != typ {
			t.Errorf("%s is a %s, want %s", name, g, typ)
		}
	}
}

func TestPromlint(t *testing.T) {
	mfs, err := fullRegistry(t).Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := testroot.RequireCommand(t, "promtool")
	text, err := testutil.GatherAndFormat(fullRegistry(t), expfmt.TypeTextPlain)
	if err != nil {
		t.Fatal(err)
	}
	promtoolCheck(t, promtool, text)
}

// promtoolCheck fails t unless `promtool check metrics` finds nothing in
// the text exposition.
func promtoolCheck(t *testing.T, promtool string, text []byte) {
	t.Helper()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(text)
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s\n--- input:\n%s", err, out, text)
	}
}

// Registering twice on one registry is an error, not a panic.
func TestRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := Register(reg, &fakeState{}, NewEventMetrics(1), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Register(reg, &fakeState{}, NewEventMetrics(1), nil); err == nil {
		t.Error("second Register on the same registry succeeded")
	}
}
