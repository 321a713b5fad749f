package collector

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// SetKnown makes the event counters' series match the configuration now
// in force (fsmon.KnownSeries), at the initial load and at every
// successful reload:
//   - every known label set is exported, at 0 until its first event, so
//     dashboards and rate() have a series before anything happened;
//   - the series of profiles the configuration no longer has are
//     dropped, counts and all (a counter that ends is a series that ends;
//     a profile added back later starts again at 0, which rate() reads
//     as a reset);
//   - a 0 series that is no longer known (a filter switched from block to
//     monitor, or its profile from protect to monitor mode) is dropped,
//     while a series of a configured profile that has counted something
//     keeps its count: a counter never goes back while its labels live.
//
// The labels go through the same caps as the events' (LabelCap); the
// series of "unknown" and "other" profiles (timeouts, past the cap) are
// always kept.
func (m *EventMetrics) SetKnown(k fsmon.KnownSeries) {
	m.mu.Lock()
	defer m.mu.Unlock()
	profiles := map[string]bool{labelUnknown: true, labelOther: true}
	for _, p := range k.Profiles {
		profiles[m.profiles.value(p)] = true
	}
	events := map[[3]string]bool{}
	for _, s := range k.Events {
		events[[3]string{enumLabel(s.Kind.String()), enumLabel(s.Op.String()), m.profiles.value(s.Profile)}] = true
	}
	denied, violations := map[[4]string]bool{}, map[[4]string]bool{}
	for _, s := range k.Filters {
		l := [4]string{m.profiles.value(s.Profile), m.filters.value(s.Filter), labelHost, ""}
		switch s.Kind {
		case fsmon.KindDenied:
			denied[l] = true
		case fsmon.KindViolation:
			violations[l] = true
		}
	}
	prune(m.events, []string{"event", "op", "profile"}, "profile", profiles, func(v []string) bool {
		return events[[3]string(v)]
	})
	filterLabels := []string{"profile", "filter", "container", "namespace"}
	prune(m.denied, filterLabels, "profile", profiles, func(v []string) bool { return denied[[4]string(v)] })
	prune(m.violations, filterLabels, "profile", profiles, func(v []string) bool { return violations[[4]string(v)] })
	for l := range events {
		m.events.WithLabelValues(l[:]...)
	}
	for l := range denied {
		m.denied.WithLabelValues(l[:]...)
	}
	for l := range violations {
		m.violations.WithLabelValues(l[:]...)
	}
}

// prune deletes the series of vec whose profile is not in profiles, and
// those at 0 that known does not list. names are vec's label names in
// their order.
func prune(vec *prometheus.CounterVec, names []string, profileLabel string, profiles map[string]bool, known func([]string) bool) {
	ch := make(chan prometheus.Metric)
	go func() {
		vec.Collect(ch)
		close(ch)
	}()
	var drop [][]string
	for metric := range ch {
		var pb dto.Metric
		if err := metric.Write(&pb); err != nil {
			continue
		}
		byName := map[string]string{}
		for _, lp := range pb.GetLabel() {
			byName[lp.GetName()] = lp.GetValue()
		}
		values := make([]string, len(names))
		for i, n := range names {
			values[i] = byName[n]
		}
		if !profiles[byName[profileLabel]] || pb.GetCounter().GetValue() == 0 && !known(values) {
			drop = append(drop, values)
		}
	}
	for _, values := range drop {
		vec.DeleteLabelValues(values...)
	}
}
