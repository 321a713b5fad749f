package main

// Scenario h: floods of openers (issue 13). Answered opens per second of
// a protected file by an allowed opener under 1, 16 and 300 concurrent
// openers (threads of one process), the daemon against the minimal C
// responder in the same run, both at SCHED_FIFO 10; and 300 threads and
// 200 processes opening a denied file: how many got through.
//
// Not pinned: a flood is the whole machine's business, and pinning the
// openers would take from them the CPU a real flood has.

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

var floodLevels = []int{1, 16, 300}

// floodRun is one run of bench/flood.
type floodRun struct{ opens, ok, eperm, read, secs float64 }

func (r floodRun) rate() float64 { return r.opens / r.secs }

func floodOnce(mode string, n int, file string) floodRun {
	out := run(2*time.Minute+time.Duration(*floodSecs*float64(time.Second)), -1,
		filepath.Join(*toolsDir, "flood"), mode, strconv.Itoa(n), strconv.FormatFloat(*floodSecs, 'f', -1, 64), file)
	f := strings.Fields(out)
	if len(f) != 10 {
		fatalf("flood: unexpected output %q", out)
	}
	v := make([]float64, 5)
	for i := range v {
		v[i], _ = strconv.ParseFloat(f[2*i+1], 64)
	}
	return floodRun{v[0], v[1], v[2], v[3], v[4]}
}

// schedOf says how the threads of pid are scheduled: "SCHED_FIFO 10 ×1,
// SCHED_OTHER ×6" (policy and rt_priority, fields 41 and 40 of
// /proc/PID/task/TID/stat).
func schedOf(pid int) string {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	count := map[string]int{}
	var order []string
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		// f[0] is field 3 (state): field k is f[k-3].
		if len(f) < 39 {
			continue
		}
		k := "SCHED_OTHER"
		switch f[40-3+1] {
		case "1":
			k = "SCHED_FIFO " + f[40-3]
		case "2":
			k = "SCHED_RR " + f[40-3]
		}
		if count[k] == 0 {
			order = append(order, k)
		}
		count[k]++
	}
	parts := make([]string, len(order))
	for i, k := range order {
		parts[i] = fmt.Sprintf("%s ×%d", k, count[k])
	}
	return strings.Join(parts, ", ")
}

type floodResult struct {
	c, fs        map[int][]floodRun
	fsTimeouts   float64 // default answers during the allowed floods
	cSched       string
	fsSched      string
	denied       []deniedFlood
	deniedConfig string
}

type deniedFlood struct {
	what     string
	r        floodRun
	timeouts float64
}

const timeoutsMetric = "fsmon_permission_decision_timeouts_total"

func flood(file, floodPath string) *floodResult {
	res := &floodResult{c: map[int][]floodRun{}, fs: map[int][]floodRun{}}
	allowCfg := protectConfig(file, "protect", []string{floodPath})
	for rep := 0; rep < *floodReps; rep++ {
		progress("floods: repetition %d of %d", rep+1, *floodReps)
		// preread: the file's content is guarded as the daemon guards a
		// protect-mode block file (FAN_PRE_ACCESS), so the 1-byte read
		// of each open is a second round trip for both responders.
		c := startMinResp(-1, "-fifo", "10", "preread", file)
		res.cSched = schedOf(c.pid())
		for _, n := range floodLevels {
			r := floodOnce("threads", n, file)
			if r.eperm != 0 || r.read != r.ok {
				fatalf("flood against minresp preread: %+v", r)
			}
			res.c[n] = append(res.c[n], r)
			logf("minresp FIFO 10, %d threads: %.0f opens/s", n, r.rate())
		}
		c.stop()
		d := startDaemon(-1, allowCfg)
		res.fsSched = schedOf(d.pid())
		t0 := d.metrics(timeoutsMetric)[timeoutsMetric]
		for _, n := range floodLevels {
			r := floodOnce("threads", n, file)
			if r.eperm != 0 {
				fatalf("flood against fsmon, allowed opener: %.0f of %.0f opens denied", r.eperm, r.opens)
			}
			res.fs[n] = append(res.fs[n], r)
			logf("fsmon, %d threads: %.0f opens/s", n, r.rate())
		}
		res.fsTimeouts += d.metrics(timeoutsMetric)[timeoutsMetric] - t0
		d.stop()
	}
	progress("floods: denied file")
	d := startDaemon(-1, protectConfig(file, "protect", []string{"/nonexistent/bench-allowed"}))
	for _, f := range []struct {
		mode string
		n    int
	}{{"threads", 300}, {"procs", 200}} {
		t0 := d.metrics(timeoutsMetric)[timeoutsMetric]
		r := floodOnce(f.mode, f.n, file)
		res.denied = append(res.denied, deniedFlood{fmt.Sprintf("%d %s", f.n, map[string]string{"threads": "threads of one process", "procs": "processes"}[f.mode]), r,
			d.metrics(timeoutsMetric)[timeoutsMetric] - t0})
		logf("fsmon deny, %d %s: %+v", f.n, f.mode, r)
	}
	d.stop()
	return res
}

func reportFlood(w io.Writer, r *floodResult) {
	fmt.Fprintf(w, "h. Floods: answered open()s per second of a protected file by an allowed opener (N threads of one process, each open+read 1 byte+close, %gs a run, not pinned), medians of %d; minimal C responder (pre-content marks: open and read judged, as the daemon guards the file) at SCHED_FIFO 10 (threads: %s), fsmon_exporter at its default --permission.priority=realtime (threads: %s)\n\n",
		*floodSecs, *floodReps, r.cSched, r.fsSched)
	fmt.Fprintln(w, "| concurrent openers | minimal C, opens/s | fsmon, opens/s | fsmon / C | per-rep range | goal |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---|")
	for _, n := range floodLevels {
		var c, f, rat []float64
		for i := range r.c[n] {
			c = append(c, r.c[n][i].rate())
			f = append(f, r.fs[n][i].rate())
			rat = append(rat, r.fs[n][i].rate()/r.c[n][i].rate())
		}
		lo, hi := spread(rat)
		fmt.Fprintf(w, "| %d | %.0f | %.0f | **%s** | %.2f–%.2f | ≥ 0.9 |\n", n, median(c), median(f), ratio(median(f), median(c)), lo, hi)
	}
	fmt.Fprintf(w, "\nDecisions answered by the default (%s) during the allowed floods: %.0f\n\n", timeoutsMetric, r.fsTimeouts)
	fmt.Fprintf(w, "Denied file (protect, opener not allowed, default --permission.timeout and fail-open), %gs a flood:\n\n", *floodSecs)
	fmt.Fprintln(w, "| flood | opens answered | opens/s | denied (EPERM) | got through | content read | default answers | goal |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---|")
	for _, d := range r.denied {
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | **%.0f** | %.0f | %.0f | 0 through |\n", d.what, d.r.opens, d.r.rate(), d.r.eperm, d.r.ok, d.r.read, d.timeouts)
	}
	fmt.Fprintln(w)
}
