package collector

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ReloadMetrics is the outcome of the last configuration load, initial or
// on SIGHUP. Until Set is first called it reports an unsuccessful load at
// time 0, so main must call Set after the initial load.
type ReloadMetrics struct {
	successful, timestamp *prometheus.Desc

	mu          sync.Mutex
	ok          bool
	lastSuccess time.Time
}

// NewReloadMetrics returns the reload metrics, before any load.
func NewReloadMetrics() *ReloadMetrics {
	return &ReloadMetrics{
		successful: desc("config_last_reload_successful", "1 if the last configuration load succeeded, 0 if it failed and the previous configuration stays in force."),
		timestamp:  desc("config_last_reload_success_timestamp_seconds", "Time of the last successful configuration load, in seconds since the Unix epoch."),
	}
}

// Set records a load: ok says whether it succeeded, when is when it
// happened. A failed load leaves the success timestamp where it was.
func (r *ReloadMetrics) Set(ok bool, when time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ok = ok
	if ok {
		r.lastSuccess = when
	}
}

// Describe implements prometheus.Collector.
func (r *ReloadMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- r.successful
	ch <- r.timestamp
}

// Collect implements prometheus.Collector.
func (r *ReloadMetrics) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	ok, last := r.ok, r.lastSuccess
	r.mu.Unlock()
	v, ts := 0.0, 0.0
	if ok {
		v = 1
	}
	if !last.IsZero() {
		ts = float64(last.UnixNano()) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(r.successful, prometheus.GaugeValue, v)
	ch <- prometheus.MustNewConstMetric(r.timestamp, prometheus.GaugeValue, ts)
}
