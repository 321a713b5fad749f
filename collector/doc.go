// Package collector exports fsmon_exporter's Prometheus metrics. It owns
// the metric names, labels and help texts of the contract in docs/metrics.md
// and nothing else: the engine (package fsmon) imports
// no Prometheus code, it hands over State snapshots and Events.
//
// Three collectors, by where the numbers live:
//
//   - StateCollector reads one fsmon.State per scrape and emits const
//     metrics (groups, marks, watches, overflows, drops, the decision
//     histogram, readiness). The engine keeps the counters; nothing here
//     runs on the permission path.
//   - EventMetrics is an fsmon.Sink: it counts events as the report
//     goroutine hands them over (fsmon_events_total, denials, violations).
//   - ReloadMetrics holds the outcome of the last configuration load.
//
// # Cardinality
//
// A security agent sees unbounded values all day: paths, pids, inodes,
// container ids. Tetragon once exported a `pod` label that grew to
// 300,000 series on one node; a Prometheus that ingests that falls over
// long before the agent does. So the rules here are:
//
//   - No label carries a path, pid, inode, uid, command line or full
//     container id. Those belong in the event stream (JSON lines, OTel).
//   - event, op, type, stage and source come from typed enums of package
//     fsmon and are bounded by the code.
//   - profile and filter come from the configuration, so the operator
//     bounds them; they are capped anyway (LabelCap distinct values each,
//     then "other") because a reload loop or a generated configuration
//     must not be able to grow the series count without bound.
//   - container is the container name, else the first 12 characters of
//     its id, else "host". Containers come and go, so past containerCap
//     distinct values (the --metrics.container-cap flag) new ones are
//     counted under "other". "host", "other" and "unknown" do not count
//     against the cap.
//
// The caps are per process lifetime: a value once admitted keeps its
// series (counters must not reset while the process lives), and the
// memory held is one map entry per admitted value, never per event.
package collector

import "github.com/prometheus/client_golang/prometheus"

// namespace prefixes every metric of fsmon_exporter.
const namespace = "fsmon"

// Label values with a meaning of their own.
const (
	labelHost    = "host"    // the event came from the host, not a container
	labelOther   = "other"   // the value was past its cap
	labelUnknown = "unknown" // the engine left the field empty
)

// LabelCap bounds the distinct values of the profile and filter labels.
// The configuration bounds them already; this is the defensive backstop.
const LabelCap = 1000

// DefaultContainerCap is the suggested default of --metrics.container-cap.
const DefaultContainerCap = 100

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}
