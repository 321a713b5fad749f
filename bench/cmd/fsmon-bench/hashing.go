package main

// Scenarios y and z (issue 20): what the facts of changes cost.
//
// y. Hashing under one core of writers: rewriter (bench/rewriter.c) on
// CPU 1 writes 4 KiB at a time into large watched files for
// -flood-secs, every write a change the daemon completes with the
// file's facts and, within its limits, a SHA-256 of the whole file. The
// daemon runs on CPU 0 with a protect-mode block file, and the opener
// measures that file's open()+close() on CPU 0 meanwhile: the permission
// path shares its CPU with the hashing worker. Hashing off
// (--hash.max-size=0), the defaults, and a rate that hashes nearly
// every change; events lost (dropped, kernel overflows) must stay 0.
//
// z. The start-up comparison with the baseline for -tree files: the
// first start builds the baseline (every file stat'ed and hashed); each
// later start, after some files were changed while the daemon was
// down, compares every file and reports those; the figure is exec to
// the last of those changes counted.

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	hashFiles    = 4
	hashFileSize = 8 << 20
)

type hashCase struct {
	label string
	extra []string
	write bool
}

var hashCases = []hashCase{
	{"no writers (hashing on, defaults)", nil, false},
	{"writers, hashing off (--hash.max-size=0)", []string{"--hash.max-size=0"}, true},
	{"writers, defaults (16 MiB, 10 hashes/s a filter)", nil, true},
	{"writers, --hash.rate-per-filter=100000 (every change hashed)", []string{"--hash.rate-per-filter=100000", "--hash.max-size=1GiB"}, true},
}

type hashRun struct {
	openNs                            float64
	writes, changes, hashed, hashSecs float64
	skipped, cpu, lost                float64
}

const (
	mChanges  = "fsmon_changes_total"
	mHashed   = "fsmon_file_hashes_total"
	mSkipped  = "fsmon_file_hashes_skipped_total"
	mHashSecs = "fsmon_file_hash_seconds_total"
	mDropped  = "fsmon_events_dropped_total"
	mOverflow = "fsmon_kernel_queue_overflows_total"
	mBaseline = "fsmon_baseline_files"
)

func hashConfig(protected, dir, opener string) string {
	return protectConfig(protected, "protect", []string{opener}) +
		fmt.Sprintf("      - name: large-files\n        path: %s\n        behavior: monitor\n", strconv.Quote(dir))
}

func hashing(protected, root, opener string) map[string][]hashRun {
	dir := filepath.Join(root, "large")
	must(os.Mkdir(dir, 0o755))
	defer os.RemoveAll(dir)
	var files []string
	block := make([]byte, 1<<20)
	for i := range block {
		block[i] = byte(i * 7)
	}
	for i := 0; i < hashFiles; i++ {
		p := filepath.Join(dir, fmt.Sprintf("large-%d", i))
		f, err := os.Create(p)
		must(err)
		for w := 0; w < hashFileSize/len(block); w++ {
			_, err := f.Write(block)
			must(err)
		}
		must(f.Close())
		files = append(files, p)
	}
	cfg := hashConfig(protected, dir, opener)
	out := map[string][]hashRun{}
	for rep := 0; rep < *floodReps; rep++ {
		progress("hashing: repetition %d of %d", rep+1, *floodReps)
		for _, c := range hashCases {
			out[c.label] = append(out[c.label], hashOnce(c, cfg, protected, files))
		}
	}
	return out
}

func hashOnce(c hashCase, cfg, protected string, files []string) hashRun {
	d := startDaemon(0, cfg, c.extra...)
	defer d.stop()
	all := []string{mChanges, mHashed, mSkipped, mHashSecs, mDropped, mOverflow}
	m0 := d.metrics(all...)
	cpu0 := cpuSeconds(d.pid())
	var r hashRun
	done := make(chan string, 1)
	if c.write {
		go func() {
			done <- run(time.Minute+time.Duration(*floodSecs*float64(time.Second)), 1, filepath.Join(*toolsDir, "rewriter"),
				append([]string{strconv.FormatFloat(*floodSecs, 'f', -1, 64)}, files...)...)
		}()
	} else {
		close(done)
	}
	// Opens during the flood: a few runs, their median.
	var ns []float64
	end := time.Now().Add(time.Duration(*floodSecs * float64(time.Second) * 0.8))
	for len(ns) < 3 || c.write && time.Now().Before(end) {
		v, eperm := openNs(0, *nSame/4, protected)
		if eperm != 0 {
			fatalf("hashing: the allowed opener was denied %d times", eperm)
		}
		ns = append(ns, v)
	}
	r.openNs = median(ns)
	if s := <-done; s != "" {
		f := strings.Fields(s)
		if len(f) == 4 {
			r.writes, _ = strconv.ParseFloat(f[1], 64)
		}
	}
	settle(func() float64 { return d.metrics(mChanges)[mChanges] }, 500*time.Millisecond, time.Minute)
	m := d.metrics(all...)
	r.cpu = cpuSeconds(d.pid()) - cpu0
	r.changes = m[mChanges] - m0[mChanges]
	r.hashed = m[mHashed] - m0[mHashed]
	r.skipped = m[mSkipped] - m0[mSkipped]
	r.hashSecs = m[mHashSecs] - m0[mHashSecs]
	r.lost = m[mDropped] - m0[mDropped] + m[mOverflow] - m0[mOverflow]
	logf("hashing %s: %+v", c.label, r)
	return r
}

func reportHashing(w io.Writer, rs map[string][]hashRun) {
	fmt.Fprintf(w, "y. Hashing under one core of writers: rewriter on CPU 1 writes 4 KiB blocks into %d watched files of %d MiB for %gs (every write a change to complete with the file's facts and hash); daemon on CPU 0 with a protect-mode file whose open()+close() the opener times on CPU 0 meanwhile; medians of %d\n\n",
		hashFiles, hashFileSize>>20, *floodSecs, *floodReps)
	fmt.Fprintln(w, "| configuration | open()+close() of the protected file, µs | writes | change events | hashes | skipped | hashing CPU s | daemon CPU s | events lost | goal |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, c := range hashCases {
		get := func(f func(hashRun) float64) float64 {
			var v []float64
			for _, r := range rs[c.label] {
				v = append(v, f(r))
			}
			return median(v)
		}
		fmt.Fprintf(w, "| %s | %s | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f | **%.0f** | 0 lost |\n", c.label,
			us(get(func(r hashRun) float64 { return r.openNs })), get(func(r hashRun) float64 { return r.writes }),
			get(func(r hashRun) float64 { return r.changes }), get(func(r hashRun) float64 { return r.hashed }),
			get(func(r hashRun) float64 { return r.skipped }), get(func(r hashRun) float64 { return r.hashSecs }),
			get(func(r hashRun) float64 { return r.cpu }), get(func(r hashRun) float64 { return r.lost }))
	}
	fmt.Fprintln(w)
}

// ---- z: the comparison at start ------------------------------------------

type compareResult struct {
	files, changed  int
	buildMs         float64 // first start: exec to every file in the baseline
	buildHashSecs   float64
	stateBytes      int64
	readyMs, doneMs []float64 // later starts: exec to ready, to the last change reported
	hashedAtStart   []float64
	rssMiB          []float64
}

func compare(root string, n, runs int) *compareResult {
	tree := filepath.Join(root, "baseline-tree")
	makeTree(tree, n)
	defer os.RemoveAll(tree)
	state := filepath.Join(tmpRoot, "baseline-state")
	cfg := fmt.Sprintf("profiles:\n  - name: bench\n    host: true\n    filters:\n      - name: tree\n        path: %s\n        recursive: true\n", strconv.Quote(tree))
	res := &compareResult{files: n, changed: 100}
	if n < res.changed {
		res.changed = n
	}
	progress("baseline: first start with %d watched files", n)
	d := startDaemon(-1, cfg, "--state.dir="+state)
	waitMetric(d, mBaseline, float64(n), 5*time.Minute)
	res.buildMs = float64(time.Since(d.started).Milliseconds())
	res.buildHashSecs = d.metrics(mHashSecs)[mHashSecs]
	d.stop()
	if st, err := os.Stat(filepath.Join(state, "watched-files.baseline")); err == nil {
		res.stateBytes = st.Size()
	}
	for r := 0; r < runs; r++ {
		progress("baseline: start %d of %d after %d files changed while down", r+1, runs, res.changed)
		for i := 0; i < res.changed; i++ {
			k := (i*997 + r*101) % n // makeTree's file k
			p := filepath.Join(tree, fmt.Sprintf("d%03d", k/1000), fmt.Sprintf("f%04d", k%1000))
			must(os.WriteFile(p, []byte(fmt.Sprintf("changed while down %d %d\n", r, i)), 0o644))
		}
		d := startDaemon(-1, cfg, "--state.dir="+state)
		res.readyMs = append(res.readyMs, float64(d.ready.Milliseconds()))
		// Files a run changes may repeat an earlier run's: at least one
		// change each is counted, at most changed.
		waitMetric(d, mChanges, float64(res.changed), 5*time.Minute)
		res.doneMs = append(res.doneMs, float64(time.Since(d.started).Milliseconds()))
		res.hashedAtStart = append(res.hashedAtStart, d.metrics(mHashed)[mHashed])
		res.rssMiB = append(res.rssMiB, vmRSSKiB(d.pid())/1024)
		d.stop()
	}
	return res
}

// waitMetric polls until the family's sum reaches want.
func waitMetric(d *daemon, name string, want float64, limit time.Duration) {
	end := time.Now().Add(limit)
	for d.metrics(name)[name] < want {
		if time.Now().After(end) {
			fatalf("%s below %.0f after %v", name, want, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func reportCompare(w io.Writer, r *compareResult, fsName string) {
	fmt.Fprintf(w, "z. Start-up comparison with the baseline (--state.dir): %d watched files on %s (one recursive monitor filter), not pinned\n\n", r.files, fsName)
	fmt.Fprintln(w, "| start | runs | ready, ms | comparison done, ms | hashes | VmRSS, MiB |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	fmt.Fprintf(w, "| first: builds the baseline (every file stat'ed and hashed; %.2f s hashing), %d bytes written | 1 | | %.0f | %d | |\n", r.buildHashSecs, r.stateBytes, r.buildMs, r.files)
	fmt.Fprintf(w, "| later: %d files changed while down, each reported | %d | %.0f | %.0f | %.0f | %.1f |\n\n", r.changed, len(r.doneMs), median(r.readyMs), median(r.doneMs), median(r.hashedAtStart), median(r.rssMiB))
}
