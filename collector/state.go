package collector

import (
	"log/slog"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// StateSource is what the state collector reads: the engine, or a fake in
// tests. Snapshot is called once per scrape and must be safe to call from
// any goroutine.
type StateSource interface{ Snapshot() fsmon.State }

// Every stage and source of package fsmon, so that a dashboard's rate()
// has a series at 0 before the first loss, not a gap.
var (
	dropStages      = []fsmon.DropStage{fsmon.DropReportQueue, fsmon.DropExport, fsmon.DropKernel}
	overflowSources = []fsmon.OverflowSource{fsmon.OverflowFanotify, fsmon.OverflowInotify}
)

type stateCollector struct {
	src    StateSource
	logger *slog.Logger

	groups, pending, marks, rules *prometheus.Desc
	watches, watchesLimit         *prometheus.Desc
	overflows, dropped, timeouts  *prometheus.Desc
	late, standinAnswers, readers *prometheus.Desc
	decisions, ready, unmarked    *prometheus.Desc
	budgetUnmarked                *prometheus.Desc
	unjudged, withoutPreContent   *prometheus.Desc
	profileGroups                 *prometheus.Desc
	procRecords, procSize         *prometheus.Desc
	procEvictions, procLost       *prometheus.Desc
	baseline                      baselineMetrics
}

// NewStateCollector returns a collector that reads src.Snapshot() once per
// scrape and exports it as const metrics.
func NewStateCollector(src StateSource, logger *slog.Logger) prometheus.Collector {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &stateCollector{
		src:               src,
		logger:            logger.With("collector", "state"),
		groups:            desc("groups", "Monitored groups: the host and every watched container."),
		pending:           desc("pending_file_events", "Events waiting in the engine's report queue."),
		marks:             desc("fanotify_marks", "fanotify marks placed in the kernel, by the object they are on (file, dir, mount, filesystem).", "type"),
		rules:             desc("fanotify_rules", "Allow rules in force: entries of the allow lists of block filters."),
		watches:           desc("inotify_watches", "inotify watches held by fsmon_exporter."),
		watchesLimit:      desc("inotify_watches_limit", "The kernel's per-user inotify watch limit, fs.inotify.max_user_watches."),
		overflows:         desc("kernel_queue_overflows_total", "Times a kernel event queue overflowed and events were lost, by source (fanotify, inotify).", "source"),
		dropped:           desc("events_dropped_total", "Events lost, by stage: report_queue (engine queue to the sinks full), export (an exporter's queue full), kernel (one per kernel queue overflow; the number lost is unknown).", "stage"),
		timeouts:          desc("permission_decision_timeouts_total", "Opens of covered files answered by the configured default, not the policy, because their decision was stuck past the deadline or failed, by the answer (allow, deny); each is reported as a timeout event.", "answer"),
		standinAnswers:    desc("permission_standin_answers_total", "Opens answered with the policy's verdict by a stand-in reader while the permission loop was stuck."),
		readers:           desc("permission_standin_readers_total", "Readers started because the permission loop was stuck: standin (decides with the policy), last_resort (answers with the default, every stand-in being stuck).", "reader"),
		late:              desc("permission_late_answers_total", "Opens answered with the policy's verdict by the watchdog: decided in time, but gathering the report's facts passed the deadline."),
		decisions:         desc("permission_decision_duration_seconds", "Time from reading a permission event to writing its answer, in seconds."),
		ready:             desc("ready", "1 once every mark of the current configuration is placed, else 0."),
		unmarked:          desc("unmarked_objects", "Files and directories of the current configuration that could not be marked (out of room, or an error); the log says why."),
		budgetUnmarked:    desc("container_budget_unmarked_objects", "Files and directories of containers not marked because their container reached its object budget (--containers.max-objects); the log names the container."),
		unjudged:          desc("unjudged_descriptors", "Descriptors of files a block or report_access filter covers, held by processes the filter does not allow, opened before the file was protected (found by the last scan of /proc; the kernel cannot deny their reads).", "profile", "filter"),
		withoutPreContent: desc("protected_files_without_precontent", "Files of protect-mode block filters whose file system (tmpfs, overlayfs) or kernel (before 6.14) has no pre-content events: their reads are judged, but writes, mmap and truncate through descriptors taken from allowed processes are not.", "profile", "filter"),
		profileGroups:     desc("profile_groups", "Groups (the host, containers) each profile of the configuration in force covers; 0: its selector matches nothing that runs.", "profile"),
		procRecords:       desc("process_table_records", "Processes in the process table, live and recently exited (absent when reports read /proc)."),
		procSize:          desc("process_table_size", "The most processes the process table holds (--process.table-size)."),
		procEvictions:     desc("process_table_evictions_total", "Process records dropped to make room before their time: a change of such a process, read later, is named by /proc, or by its pid only."),
		baseline:          newBaselineMetrics(),
		procLost:          desc("process_events_lost_total", "Execs, forks and exits the kernel could not record for the process table (its ring buffer was full, or a program was skipped)."),
	}
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.groups, c.pending, c.marks, c.rules, c.watches, c.watchesLimit,
		c.overflows, c.dropped, c.timeouts, c.late, c.standinAnswers, c.readers, c.decisions, c.ready, c.unmarked, c.budgetUnmarked,
		c.unjudged, c.withoutPreContent, c.profileGroups,
		c.procRecords, c.procSize, c.procEvictions, c.procLost,
	} {
		ch <- d
	}
	c.baseline.describe(ch)
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	gauge(c.groups, float64(len(st.Groups)))
	for _, pg := range st.ProfileGroups {
		gauge(c.profileGroups, float64(pg.Groups), pg.Profile)
	}
	gauge(c.pending, float64(st.PendingEvents))
	for _, t := range fsmon.MarkTypes {
		gauge(c.marks, float64(st.Marks[t]), t.String())
	}
	gauge(c.rules, float64(st.Rules))
	gauge(c.watches, float64(st.InotifyWatches))
	gauge(c.watchesLimit, float64(st.InotifyLimit))
	for _, s := range withExtra(overflowSources, st.Overflows) {
		counter(c.overflows, st.Overflows[s], string(s))
	}
	for _, s := range withExtra(dropStages, st.Drops) {
		counter(c.dropped, st.Drops[s], string(s))
	}
	for _, a := range fsmon.Answers {
		counter(c.timeouts, st.DecisionTimeouts[a], a.String())
	}
	counter(c.late, st.LateAnswers)
	counter(c.standinAnswers, st.StandinAnswers)
	for _, r := range []fsmon.StandinReader{fsmon.ReaderStandin, fsmon.ReaderLastResort} {
		counter(c.readers, st.StandinReaders[r], string(r))
	}
	c.collectDecisions(ch, st.Decisions)
	ready := 0.0
	if st.Ready {
		ready = 1
	}
	gauge(c.ready, ready)
	gauge(c.unmarked, float64(st.Unmarked))
	gauge(c.budgetUnmarked, float64(st.BudgetUnmarked))
	if pt := st.ProcessTable; pt != nil {
		gauge(c.procRecords, float64(pt.Records))
		gauge(c.procSize, float64(pt.Size))
		counter(c.procEvictions, pt.Evictions)
		counter(c.procLost, pt.Lost)
	}
	for _, u := range st.Unjudged {
		gauge(c.unjudged, float64(u.Count), u.Profile, u.Filter)
	}
	for _, u := range st.WithoutPreContent {
		gauge(c.withoutPreContent, float64(u.Count), u.Profile, u.Filter)
	}
	c.baseline.collect(ch, st.Baseline)
}

func (c *stateCollector) collectDecisions(ch chan<- prometheus.Metric, h fsmon.HistogramSnapshot) {
	// Every bucket is exported even when the engine left it out, so the
	// series set does not change between scrapes.
	buckets := make(map[float64]uint64, len(fsmon.DecisionBuckets))
	for _, ub := range fsmon.DecisionBuckets {
		buckets[ub] = h.Buckets[ub]
	}
	m, err := prometheus.NewConstHistogram(c.decisions, h.Count, h.Sum, buckets)
	if err != nil {
		c.logger.Error("decision histogram", "err", err)
		m = prometheus.NewInvalidMetric(c.decisions, err)
	}
	ch <- m
}

// withExtra returns known followed by any other key of m, sorted: the
// known ones are always present, and a stage the engine adds later is
// exported rather than lost. Keys are typed constants of the engine, so
// they are bounded by its code.
func withExtra[K ~string, V any](known []K, m map[K]V) []K {
	out := slices.Clone(known)
	var extra []K
	for k := range m {
		if !slices.Contains(known, k) {
			extra = append(extra, k)
		}
	}
	slices.Sort(extra)
	return append(out, extra...)
}
