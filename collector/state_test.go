package collector

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// fakeState is a StateSource with fixed numbers.
type fakeState struct{ st fsmon.State }

func (f *fakeState) Snapshot() fsmon.State { return f.st }

func sampleState() *fakeState {
	return &fakeState{
		st: fsmon.State{
			Groups:            []fsmon.GroupState{{Name: "host"}, {Name: "web", ContainerID: "0123456789abcdef"}},
			PendingEvents:     3,
			Marks:             map[fsmon.MarkType]int{fsmon.MarkFile: 5, fsmon.MarkDir: 2},
			Rules:             4,
			InotifyWatches:    10,
			InotifyLimit:      8192,
			Overflows:         map[fsmon.OverflowSource]uint64{fsmon.OverflowFanotify: 1},
			Drops:             map[fsmon.DropStage]uint64{fsmon.DropReportQueue: 7, fsmon.DropKernel: 1},
			DecisionTimeouts:  map[fsmon.Answer]uint64{fsmon.AnswerAllow: 2},
			LateAnswers:       5,
			StandinAnswers:    4,
			StandinReaders:    map[fsmon.StandinReader]uint64{fsmon.ReaderStandin: 2},
			Ready:             true,
			BudgetUnmarked:    4,
			Unmarked:          6,
			Unjudged:          []fsmon.FilterCount{{Profile: "host", Filter: "shadow", Count: 2}, {Profile: "host", Filter: "keys"}},
			WithoutPreContent: []fsmon.FilterCount{{Profile: "host", Filter: "shadow"}, {Profile: "host", Filter: "shm", Count: 3}},
			ProfileGroups:     []fsmon.ProfileGroups{{Profile: "host", Groups: 1}, {Profile: "web", Groups: 1}, {Profile: "typo", Groups: 0}},
			ProcessTable:      &fsmon.ProcessTableState{Records: 120, Size: 32768, Evictions: 3, Lost: 1},
			Baseline: fsmon.BaselineState{Files: 100000, Hashed: 12, HashSeconds: 0.5,
				Skipped: map[fsmon.HashState]uint64{fsmon.HashSkippedSize: 2, fsmon.HashSkippedRate: 30}},
			// Three decisions: 8µs, 30µs and 2ms.
			Decisions: fsmon.HistogramSnapshot{Count: 3, Sum: 0.002038, Buckets: map[float64]uint64{
				1e-6: 0, 2.5e-6: 0, 5e-6: 0, 1e-5: 1, 2.5e-5: 1, 5e-5: 2, 1e-4: 2, 2.5e-4: 2, 5e-4: 2,
				1e-3: 2, 2.5e-3: 3, 5e-3: 3, 1e-2: 3, 2.5e-2: 3, 5e-2: 3, 0.1: 3, 0.25: 3, 0.5: 3, 1: 3,
			}},
		},
	}
}

const wantState = `# HELP fsmon_container_budget_unmarked_objects Files and directories of containers not marked because their container reached its object budget (--containers.max-objects); the log names the container.
# TYPE fsmon_container_budget_unmarked_objects gauge
fsmon_container_budget_unmarked_objects 4
# HELP fsmon_events_dropped_total Events lost, by stage: report_queue (engine queue to the sinks full), export (an exporter's queue full), kernel (one per kernel queue overflow; the number lost is unknown).
# TYPE fsmon_events_dropped_total counter
fsmon_events_dropped_total{stage="export"} 0
fsmon_events_dropped_total{stage="kernel"} 1
fsmon_events_dropped_total{stage="report_queue"} 7
# HELP fsmon_fanotify_marks fanotify marks placed in the kernel, by the object they are on (file, dir, mount, filesystem).
# TYPE fsmon_fanotify_marks gauge
fsmon_fanotify_marks{type="dir"} 2
fsmon_fanotify_marks{type="file"} 5
fsmon_fanotify_marks{type="filesystem"} 0
fsmon_fanotify_marks{type="mount"} 0
# HELP fsmon_fanotify_rules Allow rules in force: entries of the allow lists of block filters.
# TYPE fsmon_fanotify_rules gauge
fsmon_fanotify_rules 4
# HELP fsmon_groups Monitored groups: the host and every watched container.
# TYPE fsmon_groups gauge
fsmon_groups 2
# HELP fsmon_inotify_watches inotify watches held by fsmon_exporter.
# TYPE fsmon_inotify_watches gauge
fsmon_inotify_watches 10
# HELP fsmon_inotify_watches_limit The kernel's per-user inotify watch limit, fs.inotify.max_user_watches.
# TYPE fsmon_inotify_watches_limit gauge
fsmon_inotify_watches_limit 8192
# HELP fsmon_kernel_queue_overflows_total Times a kernel event queue overflowed and events were lost, by source (fanotify, inotify).
# TYPE fsmon_kernel_queue_overflows_total counter
fsmon_kernel_queue_overflows_total{source="fanotify"} 1
fsmon_kernel_queue_overflows_total{source="inotify"} 0
# HELP fsmon_pending_file_events Events waiting in the engine's report queue.
# TYPE fsmon_pending_file_events gauge
fsmon_pending_file_events 3
# HELP fsmon_permission_decision_duration_seconds Time from reading a permission event to writing its answer, in seconds.
# TYPE fsmon_permission_decision_duration_seconds histogram
fsmon_permission_decision_duration_seconds_bucket{le="1e-06"} 0
fsmon_permission_decision_duration_seconds_bucket{le="2.5e-06"} 0
fsmon_permission_decision_duration_seconds_bucket{le="5e-06"} 0
fsmon_permission_decision_duration_seconds_bucket{le="1e-05"} 1
fsmon_permission_decision_duration_seconds_bucket{le="2.5e-05"} 1
fsmon_permission_decision_duration_seconds_bucket{le="5e-05"} 2
fsmon_permission_decision_duration_seconds_bucket{le="0.0001"} 2
fsmon_permission_decision_duration_seconds_bucket{le="0.00025"} 2
fsmon_permission_decision_duration_seconds_bucket{le="0.0005"} 2
fsmon_permission_decision_duration_seconds_bucket{le="0.001"} 2
fsmon_permission_decision_duration_seconds_bucket{le="0.0025"} 3
fsmon_permission_decision_duration_seconds_bucket{le="0.005"} 3
fsmon_permission_decision_duration_seconds_bucket{le="0.01"} 3
fsmon_permission_decision_duration_seconds_bucket{le="0.025"} 3
fsmon_permission_decision_duration_seconds_bucket{le="0.05"} 3
fsmon_permission_decision_duration_seconds_bucket{le="0.1"} 3
fsmon_permission_decision_duration_seconds_bucket{le="0.25"} 3
fsmon_permission_decision_duration_seconds_bucket{le="0.5"} 3
fsmon_permission_decision_duration_seconds_bucket{le="1"} 3
fsmon_permission_decision_duration_seconds_bucket{le="+Inf"} 3
fsmon_permission_decision_duration_seconds_sum 0.002038
fsmon_permission_decision_duration_seconds_count 3
# HELP fsmon_permission_decision_timeouts_total Opens of covered files answered by the configured default, not the policy, because their decision was stuck past the deadline or failed, by the answer (allow, deny); each is reported as a timeout event.
# TYPE fsmon_permission_decision_timeouts_total counter
fsmon_permission_decision_timeouts_total{answer="allow"} 2
fsmon_permission_decision_timeouts_total{answer="deny"} 0
# HELP fsmon_permission_late_answers_total Opens answered with the policy's verdict by the watchdog: decided in time, but gathering the report's facts passed the deadline.
# TYPE fsmon_permission_late_answers_total counter
fsmon_permission_late_answers_total 5
# HELP fsmon_permission_standin_answers_total Opens answered with the policy's verdict by a stand-in reader while the permission loop was stuck.
# TYPE fsmon_permission_standin_answers_total counter
fsmon_permission_standin_answers_total 4
# HELP fsmon_permission_standin_readers_total Readers started because the permission loop was stuck: standin (decides with the policy), last_resort (answers with the default, every stand-in being stuck).
# TYPE fsmon_permission_standin_readers_total counter
fsmon_permission_standin_readers_total{reader="last_resort"} 0
fsmon_permission_standin_readers_total{reader="standin"} 2
# HELP fsmon_process_events_lost_total Execs, forks and exits the kernel could not record for the process table (its ring buffer was full, or a program was skipped).
# TYPE fsmon_process_events_lost_total counter
fsmon_process_events_lost_total 1
# HELP fsmon_process_table_evictions_total Process records dropped to make room before their time: a change of such a process, read later, is named by /proc, or by its pid only.
# TYPE fsmon_process_table_evictions_total counter
fsmon_process_table_evictions_total 3
# HELP fsmon_process_table_records Processes in the process table, live and recently exited (absent when reports read /proc).
# TYPE fsmon_process_table_records gauge
fsmon_process_table_records 120
# HELP fsmon_process_table_size The most processes the process table holds (--process.table-size).
# TYPE fsmon_process_table_size gauge
fsmon_process_table_size 32768
# HELP fsmon_profile_groups Groups (the host, containers) each profile of the configuration in force covers; 0: its selector matches nothing that runs.
# TYPE fsmon_profile_groups gauge
fsmon_profile_groups{profile="host"} 1
fsmon_profile_groups{profile="typo"} 0
fsmon_profile_groups{profile="web"} 1
# HELP fsmon_protected_files_without_precontent Files of protect-mode block filters whose file system (tmpfs, overlayfs) or kernel (before 6.14) has no pre-content events: their reads are judged, but writes, mmap and truncate through descriptors taken from allowed processes are not.
# TYPE fsmon_protected_files_without_precontent gauge
fsmon_protected_files_without_precontent{filter="shadow",profile="host"} 0
fsmon_protected_files_without_precontent{filter="shm",profile="host"} 3
# HELP fsmon_ready 1 once every mark of the current configuration is placed, else 0.
# TYPE fsmon_ready gauge
fsmon_ready 1
# HELP fsmon_unmarked_objects Files and directories of the current configuration that could not be marked (out of room, or an error); the log says why.
# TYPE fsmon_unmarked_objects gauge
fsmon_unmarked_objects 6
# HELP fsmon_unjudged_descriptors Descriptors of files a block or report_access filter covers, held by processes the filter does not allow, opened before the file was protected (found by the last scan of /proc; the kernel cannot deny their reads).
# TYPE fsmon_unjudged_descriptors gauge
fsmon_unjudged_descriptors{filter="keys",profile="host"} 0
fsmon_unjudged_descriptors{filter="shadow",profile="host"} 2
# HELP fsmon_baseline_files Watched files whose facts (size, mode, owner, mtime, hash) the baseline holds: the host's, kept in --state.dir, and the containers'.
# TYPE fsmon_baseline_files gauge
fsmon_baseline_files 100000
# HELP fsmon_file_hashes_total Content hashes (SHA-256) of watched files computed, at changes and at the start's comparison with the baseline.
# TYPE fsmon_file_hashes_total counter
fsmon_file_hashes_total 12
# HELP fsmon_file_hashes_skipped_total Content hashes of watched files not computed, by reason: size (past --hash.max-size), rate (past the filter's --hash.rate-per-filter), busy (the hashing queue more than half full), unreadable, changing (written while read), off (--hash.max-size=0).
# TYPE fsmon_file_hashes_skipped_total counter
fsmon_file_hashes_skipped_total{reason="busy"} 0
fsmon_file_hashes_skipped_total{reason="changing"} 0
fsmon_file_hashes_skipped_total{reason="off"} 0
fsmon_file_hashes_skipped_total{reason="rate"} 30
fsmon_file_hashes_skipped_total{reason="size"} 2
fsmon_file_hashes_skipped_total{reason="unreadable"} 0
# HELP fsmon_file_hash_seconds_total Time spent hashing watched files, in seconds.
# TYPE fsmon_file_hash_seconds_total counter
fsmon_file_hash_seconds_total 0.5
`

func TestStateCollector(t *testing.T) {
	c := NewStateCollector(sampleState(), nil)
	if err := testutil.CollectAndCompare(c, strings.NewReader(wantState)); err != nil {
		t.Fatal(err)
	}
}

// A zero snapshot still has every labelled series at 0 and every bucket,
// so dashboards and alerts see 0, not "no data", before anything happens.
func TestStateCollectorZero(t *testing.T) {
	c := NewStateCollector(&fakeState{}, nil)
	// 1 groups + 1 pending + 4 marks + 1 rules + 2 watches + 2 overflows +
	// 3 drops + 2 timeouts (allow, deny) + 1 late + 1 stand-in answers +
	// 2 stand-in readers + 1 histogram + 1 ready + 1 unmarked + 1
	// unmarked by container budgets + 1 baseline files + 1 hashes + 6
	// hashes skipped (by reason) + 1 hash seconds.
	if n := testutil.CollectAndCount(c); n != 33 {
		t.Errorf("zero state: %d series, want 33", n)
	}
	const want = `# HELP fsmon_profile_groups Groups (the host, containers) each profile of the configuration in force covers; 0: its selector matches nothing that runs.
# TYPE fsmon_profile_groups gauge
fsmon_profile_groups{profile="host"} 1
fsmon_profile_groups{profile="typo"} 0
fsmon_profile_groups{profile="web"} 1
# HELP fsmon_ready 1 once every mark of the current configuration is placed, else 0.
# TYPE fsmon_ready gauge
fsmon_ready 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "fsmon_ready"); err != nil {
		t.Error(err)
	}
}

func TestStateCollectorExtraStage(t *testing.T) {
	src := &fakeState{fsmon.State{Drops: map[fsmon.DropStage]uint64{"otel": 4}}}
	const want = `# HELP fsmon_events_dropped_total Events lost, by stage: report_queue (engine queue to the sinks full), export (an exporter's queue full), kernel (one per kernel queue overflow; the number lost is unknown).
# TYPE fsmon_events_dropped_total counter
fsmon_events_dropped_total{stage="export"} 0
fsmon_events_dropped_total{stage="kernel"} 0
fsmon_events_dropped_total{stage="otel"} 4
fsmon_events_dropped_total{stage="report_queue"} 0
`
	c := NewStateCollector(src, nil)
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "fsmon_events_dropped_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c, "fsmon_permission_decision_duration_seconds"); n != 1 {
		t.Errorf("histogram series: %d, want 1", n)
	}
}
