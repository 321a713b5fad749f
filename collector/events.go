package collector

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// EventMetrics counts events as the engine reports them. It is an
// fsmon.Sink and a prometheus.Collector. Handle runs on the engine's
// report goroutine, after the permission decision has been answered, so
// it only has to keep pace with the report queue: a few map look-ups and
// atomic adds, no allocation once a series exists.
type EventMetrics struct {
	// mu is held shared by Handle and alone by SetKnown, so that a
	// reload's pruning never deletes a series between an event's look-up
	// and its add.
	mu sync.RWMutex

	events     *prometheus.CounterVec
	denied     *prometheus.CounterVec
	violations *prometheus.CounterVec
	changes    *prometheus.CounterVec

	profiles   *limiter
	filters    *limiter
	containers *limiter
	namespaces *limiter
}

// NewEventMetrics returns the event counters with the container label
// capped at containerCap distinct values (past it: "other"; 0 counts every
// container as "other"). A container named host, other or unknown shares
// that series and takes no slot. The namespace label (a pod's Kubernetes
// namespace, empty outside pods) has a cap of containerCap of its own.
// profile and filter are capped at LabelCap.
func NewEventMetrics(containerCap int) *EventMetrics {
	return &EventMetrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "events_total",
			Help:      "File events reported, by event (access, change, violation, denied, learned, timeout), operation and profile; counted before folding, so a folded report of n events adds n.",
		}, []string{"event", "op", "profile"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "access_denied_total",
			Help:      "Opens denied with EPERM by a block filter in protect mode, by profile, filter, container (name, short id, host or other) and the pod's namespace (empty outside Kubernetes pods).",
		}, []string{"profile", "filter", "container", "namespace"}),
		violations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "access_violations_total",
			Help:      "Opens a block filter would have denied, allowed because the profile is in monitor mode, by profile, filter, container (name, short id, host or other) and the pod's namespace (empty outside Kubernetes pods).",
		}, []string{"profile", "filter", "container", "namespace"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "changes_total",
			Help:      "Changes of watched files reported (change events, those made while the daemon was down included), by profile, filter and operation; counted before folding.",
		}, []string{"profile", "filter", "op"}),
		profiles:   newLimiter(LabelCap),
		filters:    newLimiter(LabelCap),
		containers: newLimiter(containerCap, labelHost, labelOther, labelUnknown),
		namespaces: newLimiter(containerCap, labelOther),
	}
}

// Handle counts one event (or Count folded ones).
func (m *EventMetrics) Handle(ev *fsmon.Event) {
	if ev == nil {
		return
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	n := float64(ev.Count)
	if ev.Count < 1 {
		n = 1 // an unfolded event may leave Count zero
	}
	profile := m.profiles.value(ev.Profile)
	m.events.WithLabelValues(enumLabel(ev.Kind.String()), enumLabel(ev.Op.String()), profile).Add(n)

	var vec *prometheus.CounterVec
	switch ev.Kind {
	case fsmon.KindChange:
		m.changes.WithLabelValues(profile, m.filters.value(ev.Filter), enumLabel(ev.Op.String())).Add(n)
		return
	case fsmon.KindDenied:
		vec = m.denied
	case fsmon.KindViolation:
		vec = m.violations
	default:
		return
	}
	ns := ""
	if ev.Container.Pod.Namespace != "" {
		ns = m.namespaces.value(ev.Container.Pod.Namespace)
	}
	vec.WithLabelValues(profile, m.filters.value(ev.Filter), m.containers.value(containerLabel(ev.Container)), ns).Add(n)
}

// containerLabel is the container's name, else its short id (the 12
// characters docker ps shows), else "host".
func containerLabel(c fsmon.Container) string {
	switch {
	case c.Name != "":
		return c.Name
	case len(c.ID) > 12:
		return c.ID[:12]
	case c.ID != "":
		return c.ID
	}
	return labelHost
}

// enumLabel names the zero value of an fsmon enum, whose String is empty.
func enumLabel(s string) string {
	if s == "" {
		return labelUnknown
	}
	return s
}

// Describe implements prometheus.Collector.
func (m *EventMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.events.Describe(ch)
	m.denied.Describe(ch)
	m.violations.Describe(ch)
	m.changes.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *EventMetrics) Collect(ch chan<- prometheus.Metric) {
	m.events.Collect(ch)
	m.denied.Collect(ch)
	m.violations.Collect(ch)
	m.changes.Collect(ch)
}

var _ fsmon.Sink = (*EventMetrics)(nil)
