package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Scenario i: what an exec costs with the daemon's BPF programs loaded.
// The execer (bench/execer.c) spawns, execs and waits for /bin/true in a
// loop; it runs with no daemon, with a daemon without the process table
// (--process.table=off: the exec counter of the executable cache only,
// the daemon as it was before the table), and with the default (the
// table's exec, fork and exit programs and its reader), interleaved,
// each daemon started afresh in every repetition. Same CPU: execer and
// daemon on CPU 0, so the table's reader, woken by every exec, competes
// with the execs for it; cross: the execer on CPU 1.

var nExec = flag.Int("execs", 2000, "execs per run in the exec-cost scenario (i)")

type execResult struct {
	none, off, on sample
	lost          []float64 // fsmon_process_events_lost_total after each run with the table
	records       []float64
}

func execNs(cpu int, prog string) float64 {
	out := run(5*time.Minute, cpu, filepath.Join(*toolsDir, "execer"), strconv.Itoa(*nExec), prog)
	f := strings.Fields(out)
	if len(f) != 2 {
		fatalf("execer: unexpected output %q", out)
	}
	ns, _ := strconv.ParseFloat(f[0], 64)
	return ns
}

func execCost(file string) *execResult {
	prog, err := filepath.EvalSymlinks("/bin/true")
	must(err)
	cfg := fmt.Sprintf("profiles:\n  - name: bench\n    host: true\n    filters:\n      - name: f\n        path: %s\n", strconv.Quote(file))
	r := &execResult{}
	for rep := 0; rep < *reps; rep++ {
		progress("exec cost: repetition %d of %d", rep+1, *reps)
		r.none.add(execNs(0, prog), execNs(1, prog))
		d := startDaemon(0, cfg, "--process.table=off")
		r.off.add(execNs(0, prog), execNs(1, prog))
		d.stop()
		d = startDaemon(0, cfg, "--log.level=info")
		if !daemonLogSays(d, "process table on") {
			d.stop()
			fatalf("the daemon did not load the process table (see %s)", d.log)
		}
		s, x := execNs(0, prog), execNs(1, prog)
		m := d.metrics("fsmon_process_events_lost_total", "fsmon_process_table_records")
		d.stop()
		r.on.add(s, x)
		r.lost = append(r.lost, m["fsmon_process_events_lost_total"])
		r.records = append(r.records, m["fsmon_process_table_records"])
		logf("exec: none %.0f / %.0f, table off %.0f / %.0f, on %.0f / %.0f ns; lost %v", r.none.same[rep], r.none.cross[rep],
			r.off.same[rep], r.off.cross[rep], s, x, r.lost[rep])
	}
	return r
}

func daemonLogSays(d *daemon, s string) bool {
	f, err := os.Open(d.log)
	if err != nil {
		return false
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	return strings.Contains(string(b), s)
}

func reportExec(w io.Writer, r *execResult) {
	fmt.Fprintf(w, "i. Exec cost: vfork+exec+wait of /bin/true, %d a run, µs (added = minus no daemon); table off: --process.table=off (the exec counter only)\n\n", *nExec)
	fmt.Fprintln(w, "| CPUs | no daemon | table off | table on | added, table off | added, table on | added by the table (on − off) | (on − off) / no daemon | per-rep range |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, p := range []struct {
		name          string
		none, off, on []float64
	}{{"same", r.none.same, r.off.same, r.on.same}, {"cross", r.none.cross, r.off.cross, r.on.cross}} {
		n, f, o := median(p.none), median(p.off), median(p.on)
		var v []float64
		for i := range p.on {
			v = append(v, (p.on[i]-p.off[i])/p.none[i])
		}
		lo, hi := spread(v)
		fmt.Fprintf(w, "| %s | %s | %s | %s | %+.1f | %+.1f | %+.1f | %+.3f | %+.3f–%+.3f |\n", p.name, us(n), us(f), us(o),
			(f-n)/1000, (o-n)/1000, (o-f)/1000, (o-f)/n, lo, hi)
	}
	fmt.Fprintf(w, "\nrecords the kernel could not write (fsmon_process_events_lost_total), median of runs: %.0f; table records at the end: %.0f\n\n", median(r.lost), median(r.records))
}
