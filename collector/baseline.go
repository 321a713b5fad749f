package collector

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// baselineMetrics are the state collector's metrics of the baseline of
// watched files and of hashing (fsmon.BaselineState).
type baselineMetrics struct {
	files, hashes, skipped, seconds *prometheus.Desc
}

func newBaselineMetrics() baselineMetrics {
	return baselineMetrics{
		files:   desc("baseline_files", "Watched files whose facts (size, mode, owner, mtime, hash) the baseline holds: the host's, kept in --state.dir, and the containers'."),
		hashes:  desc("file_hashes_total", "Content hashes (SHA-256) of watched files computed, at changes and at the start's comparison with the baseline."),
		skipped: desc("file_hashes_skipped_total", "Content hashes of watched files not computed, by reason: size (past --hash.max-size), rate (past the filter's --hash.rate-per-filter), busy (the hashing queue more than half full), unreadable, changing (written while read), off (--hash.max-size=0).", "reason"),
		seconds: desc("file_hash_seconds_total", "Time spent hashing watched files, in seconds."),
	}
}

func (m baselineMetrics) describe(ch chan<- *prometheus.Desc) {
	ch <- m.files
	ch <- m.hashes
	ch <- m.skipped
	ch <- m.seconds
}

func (m baselineMetrics) collect(ch chan<- prometheus.Metric, st fsmon.BaselineState) {
	ch <- prometheus.MustNewConstMetric(m.files, prometheus.GaugeValue, float64(st.Files))
	ch <- prometheus.MustNewConstMetric(m.hashes, prometheus.CounterValue, float64(st.Hashed))
	for _, h := range fsmon.HashSkips {
		ch <- prometheus.MustNewConstMetric(m.skipped, prometheus.CounterValue, float64(st.Skipped[h]), h.String())
	}
	ch <- prometheus.MustNewConstMetric(m.seconds, prometheus.CounterValue, st.HashSeconds)
}
