// Command fsmon-bench is the whole-process benchmark suite of
// fsmon_exporter (`make bench`, root only). Every figure is measured in the
// same run as its baseline: no monitor, and a minimal C fanotify
// responder (bench/minresp.c) that does the least any responder must do.
//
// Latency scenarios pin the opener and the responder (the daemon's every
// thread, so GOMAXPROCS is 1) to CPU 0, and give the cross-CPU figure
// (opener on CPU 1) beside it. Each configuration is started afresh in
// every repetition, the configurations interleaved, and medians reported.
//
// Every child runs in its own process group and is killed with its group
// on every way out, so no permission responder is left behind.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	daemonBin = flag.String("daemon", "../fsmon_exporter", "the fsmon_exporter binary under test")
	toolsDir  = flag.String("tools", "bin", "directory of minresp, opener and writer")
	repoDir   = flag.String("repo", "..", "repository root, for the export benchmark (go test)")
	otelcol   = flag.String("otelcol", "../tools/otelcol/bin/otelcol-test", "test collector for the export benchmark; missing: the export figure is skipped")
	tmpBase   = flag.String("tmp", "/var/tmp", "where the latency scenarios' files go (a disk file system, as protected files are)")
	fastBase  = flag.String("tmpfs", "/dev/shm", "a tmpfs for the throughput and start-up trees (mass creation on a disk file system measures the disk); not a tmpfs: -tmp is used")
	reps      = flag.Int("reps", 5, "repetitions of each latency measurement")
	nSame     = flag.Int("n", 20000, "opens per latency run, same CPU")
	nCross    = flag.Int("n-cross", 4000, "opens per latency run, across CPUs")
	writers   = flag.Int("writers", 4, "writer processes in the throughput scenario (all on one CPU)")
	perWriter = flag.Int("files", 20000, "files each writer creates and writes in the throughput scenario")
	tputReps  = flag.Int("tput-reps", 3, "repetitions of the throughput scenario")
	treeFiles = flag.Int("tree", 100000, "watched files in the start-up scenario")
	nCtr      = flag.Int("containers", 20, "fake containers in the start-up scenario's per-container figure")
	ctrRuns   = flag.Int("container-runs", 3, "runs of the per-container figure")
	soakDur   = flag.Duration("soak", 0, "instead of the suite, the soak (make soak): the steady mix for this long, then the growth table; exit 1 when something grew more than 10%")
	only      = flag.String("only", "abcdefghijkyz", "scenarios to run (letters of the issue: a b c latency, d throughput, e start-up, f export, g collateral, h floods, i exec cost, j reads of guarded content, k a new container's first opens, y hashing under writers, z start-up comparison with the baseline)")
	nFirst    = flag.Int("first-containers", 8, "containers of each set-up of scenario k")
	floodSecs = flag.Float64("flood-secs", 3, "seconds of each flood run (scenario h)")
	floodReps = flag.Int("flood-reps", 3, "repetitions of the allowed floods (scenario h)")
	verbose   = flag.Bool("v", false, "log every measurement to stderr")
	daemonArg = flag.String("daemon-args", "", "extra flags for every daemon the suite starts, space-separated (e.g. --permission.exe-cache=off)")
)

// ---- process handling -------------------------------------------------

var (
	childMu  sync.Mutex
	children = map[int]*exec.Cmd{} // pgid -> command
	tmpRoot  string
	fastRoot string
)

// command makes a command in its own process group, pinned to cpu (-1:
// not pinned), killed if the suite dies.
func command(ctx context.Context, cpu int, name string, args ...string) *exec.Cmd {
	if cpu >= 0 {
		args = append([]string{"-c", strconv.Itoa(cpu), name}, args...)
		name = "taskset"
	}
	var c *exec.Cmd
	if ctx != nil {
		c = exec.CommandContext(ctx, name, args...)
		c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	} else {
		c = exec.Command(name, args...)
	}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return c
}

func track(c *exec.Cmd) {
	childMu.Lock()
	children[c.Process.Pid] = c
	childMu.Unlock()
}

func untrack(c *exec.Cmd) {
	childMu.Lock()
	delete(children, c.Process.Pid)
	childMu.Unlock()
}

// killAll kills every child's process group, each by its own id.
func killAll() {
	childMu.Lock()
	defer childMu.Unlock()
	for pgid := range children {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

func cleanup() {
	killAll()
	removeCgroups()
	for _, d := range []string{tmpRoot, fastRoot} {
		if d != "" {
			_ = os.RemoveAll(d)
		}
	}
}

// isTmpfs reports whether dir is on a tmpfs.
func isTmpfs(dir string) bool {
	var st syscall.Statfs_t
	return syscall.Statfs(dir, &st) == nil && st.Type == 0x01021994 // TMPFS_MAGIC
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "fsmon-bench: "+format+"\n", a...)
	cleanup()
	os.Exit(1)
}

func logf(format string, a ...any) {
	if *verbose {
		fmt.Fprintf(os.Stderr, format+"\n", a...)
	}
}

func progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "# "+format+"\n", a...)
}

// run runs a short-lived tool and returns its stdout.
func run(timeout time.Duration, cpu int, name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := command(ctx, cpu, name, args...)
	var out, errb strings.Builder
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Start(); err != nil {
		fatalf("%s: %v", name, err)
	}
	track(c)
	err := c.Wait()
	untrack(c)
	if err != nil {
		fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, errb.String())
	}
	return out.String()
}

// ---- responders -------------------------------------------------------

// minResp is bench/minresp.
type minResp struct {
	c   *exec.Cmd
	out *bufio.Reader
}

func startMinResp(cpu int, mode string, paths ...string) *minResp {
	c := command(context.Background(), cpu, filepath.Join(*toolsDir, "minresp"), append([]string{mode}, paths...)...)
	c.Stderr = os.Stderr
	stdout, err := c.StdoutPipe()
	if err != nil {
		fatalf("minresp: %v", err)
	}
	if err := c.Start(); err != nil {
		fatalf("minresp: %v", err)
	}
	track(c)
	r := &minResp{c: c, out: bufio.NewReader(stdout)}
	if l, err := firstLine(r.out, "ready", 10*time.Second); err != nil {
		r.stop()
		fatalf("minresp %s: %v (%q)", mode, err, l)
	}
	return r
}

// firstLine waits, at most d, for a child's first line of output and
// says whether it is want.
func firstLine(r *bufio.Reader, want string, d time.Duration) (string, error) {
	line := make(chan string, 1)
	go func() { l, _ := r.ReadString('\n'); line <- l }()
	select {
	case l := <-line:
		if strings.TrimSpace(l) != want {
			return l, fmt.Errorf("did not start")
		}
		return l, nil
	case <-time.After(d):
		return "", fmt.Errorf("no %q after %v", want, d)
	}
}

func (r *minResp) pid() int { return r.c.Process.Pid }

func (r *minResp) stop() {
	_ = syscall.Kill(-r.c.Process.Pid, syscall.SIGKILL)
	_ = r.c.Wait()
	untrack(r.c)
}

// counts stops a notif-mode minresp and returns what it counted.
func (r *minResp) counts() (events, bits, overflows float64) {
	_ = syscall.Kill(r.c.Process.Pid, syscall.SIGTERM)
	done := make(chan string, 1)
	go func() { b, _ := io.ReadAll(r.out); done <- string(b) }()
	var s string
	select {
	case s = <-done:
	case <-time.After(5 * time.Second):
	}
	r.stop()
	f := strings.Fields(s)
	if len(f) != 6 {
		fatalf("minresp notif: unexpected report %q", s)
	}
	events, _ = strconv.ParseFloat(f[1], 64)
	bits, _ = strconv.ParseFloat(f[3], 64)
	overflows, _ = strconv.ParseFloat(f[5], 64)
	return
}

// daemon is fsmon_exporter.
type daemon struct {
	c       *exec.Cmd
	addr    string
	log     string
	started time.Time
	ready   time.Duration
	exited  chan struct{}
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatalf("listen: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

var daemonSeq int

// startDaemon starts the daemon with config (empty: the embedded
// default) and extra flags, and waits until /-/ready answers 200.
func startDaemon(cpu int, config string, extra ...string) *daemon {
	daemonSeq++
	d := &daemon{addr: freePort(), log: filepath.Join(tmpRoot, fmt.Sprintf("daemon-%d.log", daemonSeq))}
	args := []string{"--web.listen-address=" + d.addr, "--no-events.stdout"}
	if !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--log.level=") }) {
		args = append(args, "--log.level=warn")
	}
	if !slices.ContainsFunc(extra, func(a string) bool { return strings.HasPrefix(a, "--state.dir=") }) {
		// A state of its own: the machine's (/var/lib/fsmon_exporter)
		// would carry a baseline from one run into the next.
		args = append(args, "--state.dir="+filepath.Join(tmpRoot, fmt.Sprintf("state-%d", daemonSeq)))
	}
	if config != "" {
		p := filepath.Join(tmpRoot, fmt.Sprintf("config-%d.yml", daemonSeq))
		if err := os.WriteFile(p, []byte(config), 0o644); err != nil {
			fatalf("%v", err)
		}
		args = append(args, "--config.file="+p)
	}
	args = append(args, extra...)
	args = append(args, strings.Fields(*daemonArg)...)
	lf, err := os.Create(d.log)
	if err != nil {
		fatalf("%v", err)
	}
	defer lf.Close()
	d.c = command(context.Background(), cpu, *daemonBin, args...)
	d.c.Stdout, d.c.Stderr = lf, lf
	d.started = time.Now()
	if err := d.c.Start(); err != nil {
		fatalf("%s: %v", *daemonBin, err)
	}
	track(d.c)
	exited := make(chan struct{})
	go func() { _ = d.c.Wait(); close(exited) }()
	cl := http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-exited:
			untrack(d.c)
			b, _ := os.ReadFile(d.log)
			fatalf("fsmon_exporter exited before ready:\n%s", b)
		default:
		}
		if resp, err := cl.Get("http://" + d.addr + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				d.ready = time.Since(d.started)
				break
			}
		}
		if time.Now().After(deadline) {
			d.kill()
			fatalf("fsmon_exporter not ready after 60s")
		}
		time.Sleep(2 * time.Millisecond)
	}
	go func() { <-exited; untrack(d.c) }()
	d.exited = exited
	return d
}

func (d *daemon) pid() int { return d.c.Process.Pid }

func (d *daemon) kill() { _ = syscall.Kill(-d.c.Process.Pid, syscall.SIGKILL) }

// stop shuts the daemon down with SIGTERM, SIGKILL after 10s.
func (d *daemon) stop() {
	pid := d.c.Process.Pid
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-d.exited
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL) // anything it left in its group
}

// metrics sums the samples of each family named in want.
func (d *daemon) metrics(want ...string) map[string]float64 {
	cl := http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + d.addr + "/metrics")
	if err != nil {
		fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		for _, w := range want {
			// w is a family name, optionally with one label matcher
			// written as in the exposition: name{label="value"}.
			name, label, _ := strings.Cut(w, "{")
			if !strings.HasPrefix(l, name) || len(l) > len(name) && l[len(name)] != '{' && l[len(name)] != ' ' {
				continue
			}
			if label != "" && !strings.Contains(l, strings.TrimSuffix(label, "}")) {
				continue
			}
			i := strings.LastIndexByte(l, ' ')
			v, err := strconv.ParseFloat(l[i+1:], 64)
			if err == nil {
				out[w] += v
			}
		}
	}
	return out
}

// cpuSeconds is utime+stime of pid from /proc/PID/stat.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / clkTck
}

const clkTck = 100 // USER_HZ on Linux

// ctimeOf is the inode change time of p.
func ctimeOf(p string) time.Time {
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		fatalf("stat %s: %v", p, err)
	}
	return time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
}

func vmRSSKiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			n, _ := strconv.ParseFloat(f[0], 64)
			return n
		}
	}
	return -1
}

// ---- statistics ---------------------------------------------------------

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func spread(v []float64) (lo, hi float64) {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[0], s[len(s)-1]
}

// ---- latency --------------------------------------------------------------

// openNs runs the opener on cpu and returns ns per open+close, and how
// many of its opens were denied.
func openNs(cpu, n int, file string) (ns float64, eperm int) {
	out := run(2*time.Minute, cpu, filepath.Join(*toolsDir, "opener"), strconv.Itoa(n), file)
	f := strings.Fields(out)
	if len(f) != 7 {
		fatalf("opener: unexpected output %q", out)
	}
	ns, _ = strconv.ParseFloat(f[0], 64)
	eperm, _ = strconv.Atoi(f[6])
	return ns, eperm
}

// sample is one configuration's times over the repetitions, same CPU and
// across CPUs.
type sample struct{ same, cross []float64 }

func (s *sample) add(same, cross float64) {
	s.same = append(s.same, same)
	s.cross = append(s.cross, cross)
}

type latencyCase struct {
	key, title string
	config     string // the daemon's
	baseline   string // minresp mode
	wantEPERM  bool
}

func protectConfig(file, mode string, allow []string) string {
	q := make([]string, len(allow))
	for i, a := range allow {
		q[i] = strconv.Quote(a)
	}
	return fmt.Sprintf(`profiles:
  - name: bench
    host: true
    mode: %s
    filters:
      - name: secret
        path: %s
        behavior: block
        allow: [%s]
`, mode, strconv.Quote(file), strings.Join(q, ", "))
}

// latencyResult holds one run of the latency scenarios.
type latencyResult struct {
	none    sample
	base    map[string]*sample // minresp mode -> times
	fsmon   map[string]*sample // case key -> times
	collNon sample             // unmarked file, no monitor
	collFs  sample             // unmarked file, daemon with default + protect
	nbNon   sample             // the protected file's neighbour (same directory, no filter), no monitor
	nbFs    sample             // the neighbour, the same daemon
}

func latency(cases []latencyCase, file, other, neighbour, openerPath string, collateral bool) *latencyResult {
	r := &latencyResult{base: map[string]*sample{}, fsmon: map[string]*sample{}}
	modes := []string{}
	for _, c := range cases {
		if _, ok := r.base[c.baseline]; !ok {
			r.base[c.baseline] = &sample{}
			modes = append(modes, c.baseline)
		}
		r.fsmon[c.key] = &sample{}
	}
	if collateral && len(modes) == 0 {
		r.base["allow"] = &sample{}
		modes = append(modes, "allow")
	}
	nColl := *nSame * 5
	for rep := 0; rep < *reps; rep++ {
		progress("latency: repetition %d of %d", rep+1, *reps)
		s, _ := openNs(0, *nSame, file)
		x, _ := openNs(1, *nCross, file)
		r.none.add(s, x)
		logf("none: %.0f / %.0f ns", s, x)
		for _, m := range modes {
			resp := startMinResp(0, m, file)
			s, es := openNs(0, *nSame, file)
			x, ex := openNs(1, *nCross, file)
			resp.stop()
			if (m == "deny") != (es == *nSame && ex == *nCross) {
				fatalf("minresp %s: %d+%d of %d+%d opens denied", m, es, ex, *nSame, *nCross)
			}
			r.base[m].add(s, x)
			logf("minresp %s: %.0f / %.0f ns", m, s, x)
		}
		for _, c := range cases {
			d := startDaemon(0, c.config)
			s, es := openNs(0, *nSame, file)
			x, ex := openNs(1, *nCross, file)
			d.stop()
			if c.wantEPERM != (es == *nSame && ex == *nCross) || !c.wantEPERM && es+ex != 0 {
				fatalf("fsmon %s: %d+%d of %d+%d opens denied, want %v", c.key, es, ex, *nSame, *nCross, c.wantEPERM)
			}
			r.fsmon[c.key].add(s, x)
			logf("fsmon %s: %.0f / %.0f ns", c.key, s, x)
		}
		if collateral {
			s, _ := openNs(0, nColl, other)
			x, _ := openNs(1, *nCross, other)
			r.collNon.add(s, x)
			cfg := "important_files: true\nprofiles:\n  - name: default\n" +
				strings.TrimPrefix(protectConfig(file, "protect", []string{openerPath}), "profiles:\n")
			ns, _ := openNs(0, nColl, neighbour)
			nx, _ := openNs(1, *nCross, neighbour)
			r.nbNon.add(ns, nx)
			// The daemon lets a neighbour's opens past it only once the
			// file has been left unchanged for 5 s (docs/design/deny.md §9).
			if wait := time.Until(ctimeOf(neighbour).Add(6 * time.Second)); wait > 0 {
				time.Sleep(wait)
			}
			d := startDaemon(0, cfg)
			// the protect profile is in force: the protected file is denied to others
			s, _ = openNs(0, nColl, other)
			x, _ = openNs(1, *nCross, other)
			r.collFs.add(s, x)
			logf("collateral: none %.0f / %.0f, fsmon %.0f / %.0f ns", r.collNon.same[rep], r.collNon.cross[rep], s, x)
			ns, _ = openNs(0, nColl, neighbour)
			nx, _ = openNs(1, *nCross, neighbour)
			d.stop()
			r.nbFs.add(ns, nx)
			logf("neighbour: none %.0f / %.0f, fsmon %.0f / %.0f ns", r.nbNon.same[rep], r.nbNon.cross[rep], ns, nx)
		}
	}
	return r
}

// ---- throughput -------------------------------------------------------------

type tputRun struct {
	files, expected  float64 // files written; change bits expected (create + modify per file)
	produced         float64 // expected / writers' wall time
	handled          float64 // events counted by the responder
	rate             float64 // handled per second, writers' start to last event
	cpuPerM          float64 // responder CPU seconds per million events handled
	lost, drop, ovfl float64
}

// writeBurst runs the writers on CPU 1 into dir and returns when they are
// done, with their start time.
func writeBurst(dir string) (start time.Time, wall time.Duration) {
	var wg sync.WaitGroup
	start = time.Now()
	for w := 0; w < *writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			run(5*time.Minute, 1, filepath.Join(*toolsDir, "writer"), dir, fmt.Sprintf("w%d", w), strconv.Itoa(*perWriter))
		}(w)
	}
	wg.Wait()
	return start, time.Since(start)
}

// settle polls v until it has not changed for quiet, and returns its last
// value and when it last changed.
func settle(v func() float64, quiet time.Duration, limit time.Duration) (float64, time.Time) {
	last, at := v(), time.Now()
	end := time.Now().Add(limit)
	for time.Now().Before(end) {
		time.Sleep(25 * time.Millisecond)
		if x := v(); x != last {
			last, at = x, time.Now()
		} else if time.Since(at) >= quiet {
			break
		}
	}
	return last, at
}

func throughput(root string) (base, fs []tputRun) {
	files := float64(*writers * *perWriter)
	for rep := 0; rep < *tputReps; rep++ {
		progress("throughput: repetition %d of %d", rep+1, *tputReps)
		// minimal C reader
		dir := filepath.Join(root, fmt.Sprintf("tput-c-%d", rep))
		must(os.Mkdir(dir, 0o755))
		r := startMinResp(0, "notif", dir)
		cpu0 := cpuSeconds(r.pid())
		start, wall := writeBurst(dir)
		_, at := settle(func() float64 { return cpuSeconds(r.pid()) }, 300*time.Millisecond, time.Minute)
		cpu := cpuSeconds(r.pid()) - cpu0
		ev, bits, ovf := r.counts()
		base = append(base, tputRun{files: files, expected: 2 * files, produced: 2 * files / wall.Seconds(),
			handled: bits, rate: bits / at.Sub(start).Seconds(), cpuPerM: cpu / bits * 1e6,
			lost: 2*files - bits, ovfl: ovf})
		logf("minresp notif: %v events, %v bits, %v overflows, %.2fs cpu, writers %v", ev, bits, ovf, cpu, wall)
		_ = os.RemoveAll(dir)

		// the daemon
		dir = filepath.Join(root, fmt.Sprintf("tput-f-%d", rep))
		must(os.Mkdir(dir, 0o755))
		d := startDaemon(0, fmt.Sprintf("profiles:\n  - name: bench\n    host: true\n    filters:\n      - name: tput\n        path: %s\n", strconv.Quote(dir)))
		cpu0 = cpuSeconds(d.pid())
		start, wall = writeBurst(dir)
		const changes = `fsmon_events_total{event="change"}`
		n, at := settle(func() float64 { return d.metrics(changes)[changes] }, 500*time.Millisecond, time.Minute)
		cpu = cpuSeconds(d.pid()) - cpu0
		m := d.metrics("fsmon_events_dropped_total", "fsmon_kernel_queue_overflows_total")
		d.stop()
		fs = append(fs, tputRun{files: files, expected: 2 * files, produced: 2 * files / wall.Seconds(),
			handled: n, rate: n / at.Sub(start).Seconds(), cpuPerM: cpu / n * 1e6,
			lost: 2*files - n, drop: m["fsmon_events_dropped_total"], ovfl: m["fsmon_kernel_queue_overflows_total"]})
		logf("fsmon: %v change events, dropped %v, overflows %v, %.2fs cpu, writers %v", n, m["fsmon_events_dropped_total"], m["fsmon_kernel_queue_overflows_total"], cpu, wall)
		_ = os.RemoveAll(dir)
	}
	return base, fs
}

func must(err error) {
	if err != nil {
		fatalf("%v", err)
	}
}

// ---- start-up ---------------------------------------------------------------

type startRun struct{ ready, rssMiB []float64 }

func startup(config string, n int) startRun {
	var s startRun
	for i := 0; i < n; i++ {
		d := startDaemon(-1, config)
		time.Sleep(100 * time.Millisecond) // let the heap settle after the walk
		s.ready = append(s.ready, d.ready.Seconds()*1000)
		s.rssMiB = append(s.rssMiB, vmRSSKiB(d.pid())/1024)
		d.stop()
		logf("start-up: ready after %v, VmRSS %.1f MiB", d.ready, s.rssMiB[i])
	}
	return s
}

func makeTree(root string, n int) {
	perDir := 1000
	for i := 0; i*perDir < n; i++ {
		dir := filepath.Join(root, fmt.Sprintf("d%03d", i))
		must(os.MkdirAll(dir, 0o755))
		for j := 0; j < perDir && i*perDir+j < n; j++ {
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("f%04d", j)), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
			must(err)
			f.Close()
		}
	}
}

// ---- export -------------------------------------------------------------------

var recordsRe = regexp.MustCompile(`([0-9.e+]+) records/s`)

func export() (string, []float64) {
	col, err := filepath.Abs(*otelcol)
	if err != nil || !isFile(col) {
		return "skipped: no test collector at " + *otelcol + " (make -C .. otelcol)", nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := command(ctx, -1, "go", "test", "-count=3", "-run", "^$", "-bench", "BenchmarkExportRecords/now$", "./exporters/otel")
	c.Dir = *repoDir
	c.Env = append(os.Environ(), "OTELCOL_BINARY="+col)
	var out strings.Builder
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		return "skipped: " + err.Error(), nil
	}
	track(c)
	err = c.Wait()
	untrack(c)
	logf("%s", out.String())
	if err != nil {
		return "failed: " + lastLine(out.String()), nil
	}
	var v []float64
	for _, m := range recordsRe.FindAllStringSubmatch(out.String(), -1) {
		f, _ := strconv.ParseFloat(m[1], 64)
		v = append(v, f)
	}
	if len(v) == 0 {
		return "no records/s in the benchmark output", nil
	}
	return "", v
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// ---- report -----------------------------------------------------------------------

func us(ns float64) string { return fmt.Sprintf("%.1f", ns/1000) }

func ratio(a, b float64) string {
	if b <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
}

// perRep is the median and range of per-repetition ratios of added
// latencies.
func perRep(f, b, none []float64) string {
	var v []float64
	for i := range f {
		if d := b[i] - none[i]; d > 0 {
			v = append(v, (f[i]-none[i])/d)
		}
	}
	if len(v) == 0 {
		return "n/a"
	}
	lo, hi := spread(v)
	return fmt.Sprintf("%.2f–%.2f", lo, hi)
}

func machine() string {
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	var u syscall.Utsname
	_ = syscall.Uname(&u)
	rel := make([]byte, 0, len(u.Release))
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		rel = append(rel, byte(c))
	}
	return fmt.Sprintf("%d CPUs, %s, Linux %s", runtime.NumCPU(), model, rel)
}

func main() {
	runtime.LockOSThread() // Pdeathsig follows the forking thread: keep it for the process's life
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "fsmon-bench: needs root (fanotify permission events need CAP_SYS_ADMIN)")
		os.Exit(1)
	}
	if runtime.NumCPU() < 2 {
		fmt.Fprintln(os.Stderr, "fsmon-bench: needs at least 2 CPUs (same-CPU and cross-CPU figures)")
		os.Exit(1)
	}
	for _, t := range []string{"minresp", "opener", "reader", "writer", "flood", "execer", "rewriter"} {
		if !isFile(filepath.Join(*toolsDir, t)) {
			fatalf("%s/%s missing: build with make -C bench", *toolsDir, t)
		}
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		fatalf("taskset missing (util-linux)")
	}
	var err error
	*daemonBin, err = filepath.Abs(*daemonBin)
	must(err)
	if !isFile(*daemonBin) {
		fatalf("%s missing: make build", *daemonBin)
	}
	*toolsDir, err = filepath.Abs(*toolsDir)
	must(err)
	openerPath, err := filepath.EvalSymlinks(filepath.Join(*toolsDir, "opener"))
	must(err)

	tmpRoot, err = os.MkdirTemp(*tmpBase, "fsmon-bench-")
	must(err)
	fastFS := "tmpfs"
	if isTmpfs(*fastBase) {
		fastRoot, err = os.MkdirTemp(*fastBase, "fsmon-bench-")
		must(err)
	} else {
		fastRoot, fastFS = tmpRoot, "the -tmp file system ("+*fastBase+" is not a tmpfs)"
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sig
		fmt.Fprintf(os.Stderr, "fsmon-bench: %v: cleaning up\n", s)
		cleanup()
		os.Exit(1)
	}()
	defer cleanup()
	defer func() {
		if p := recover(); p != nil {
			cleanup()
			panic(p)
		}
	}()
	if *soakDur > 0 {
		rc := soak(*soakDur, openerPath)
		cleanup()
		os.Exit(rc)
	}
	began := time.Now()

	protDir := filepath.Join(tmpRoot, "protected")
	otherDir := filepath.Join(tmpRoot, "other")
	must(os.Mkdir(protDir, 0o755))
	must(os.Mkdir(otherDir, 0o755))
	file := filepath.Join(protDir, "secret")
	other := filepath.Join(otherDir, "plain")
	neighbour := filepath.Join(protDir, "neighbour")
	must(os.WriteFile(file, []byte("secret\n"), 0o644))
	must(os.WriteFile(other, []byte("plain\n"), 0o644))
	must(os.WriteFile(neighbour, []byte("plain\n"), 0o644))

	has := func(s string) bool { return strings.Contains(*only, s) }
	var cases []latencyCase
	if has("a") {
		cases = append(cases, latencyCase{"a", "a. protect, allowed process", protectConfig(file, "protect", []string{openerPath}), "allow", false})
	}
	if has("b") {
		cases = append(cases, latencyCase{"b", "b. protect, denied open", protectConfig(file, "protect", []string{"/nonexistent/bench-allowed"}), "deny", true})
	}
	if has("c") {
		cases = append(cases, latencyCase{"c", "c. monitor, violation reported", protectConfig(file, "monitor", []string{"/nonexistent/bench-allowed"}), "allow", false})
	}
	var lat *latencyResult
	if len(cases) > 0 || has("g") {
		lat = latency(cases, file, other, neighbour, openerPath, has("g"))
	}
	var tb, tf []tputRun
	if has("d") {
		tb, tf = throughput(fastRoot)
	}
	var sDef, sTree startRun
	var ctr []ctrRun
	var ctrMsg string
	if has("e") {
		progress("start-up: embedded default")
		sDef = startup("", *reps)
		progress("start-up: %d watched files", *treeFiles)
		tree := filepath.Join(fastRoot, "tree")
		makeTree(tree, *treeFiles)
		sTree = startup(fmt.Sprintf("profiles:\n  - name: bench\n    host: true\n    filters:\n      - name: tree\n        path: %s\n        recursive: true\n", strconv.Quote(tree)), 3)
		_ = os.RemoveAll(tree)
		ctrDir := filepath.Join(tmpRoot, "containers")
		ctr, ctrMsg = containers(ctrDir, *nCtr, *ctrRuns)
		_ = os.RemoveAll(ctrDir)
	}
	var fl *floodResult
	if has("h") {
		floodPath, err := filepath.EvalSymlinks(filepath.Join(*toolsDir, "flood"))
		must(err)
		fl = flood(file, floodPath)
	}
	var ex *execResult
	if has("i") {
		ex = execCost(file)
	}
	var rd *readResult
	if has("j") {
		readerPath, err := filepath.EvalSymlinks(filepath.Join(*toolsDir, "reader"))
		must(err)
		rd = reads(file, other, readerPath)
	}
	var hs map[string][]hashRun
	if has("y") {
		hs = hashing(file, fastRoot, openerPath)
	}
	var cmp *compareResult
	if has("z") {
		cmp = compare(fastRoot, *treeFiles, 3)
	}
	var first []firstResult
	if has("k") {
		first = firstOpen(*nFirst)
	}
	var expMsg string
	var exp []float64
	if has("f") {
		progress("export: go test -bench BenchmarkExportRecords ./exporters/otel")
		expMsg, exp = export()
	}

	// ---- the table
	w := os.Stdout
	fmt.Fprintf(w, "\nfsmon_exporter benchmark — %s — %s\n", machine(), time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	args := ""
	if *daemonArg != "" {
		args = " with " + *daemonArg
	}
	fmt.Fprintf(w, "daemon %s%s; medians of %d repetitions; same CPU: opener and responder on CPU 0; cross: opener on CPU 1\n\n", *daemonBin, args, *reps)
	if lat != nil && len(cases) > 0 {
		fmt.Fprintln(w, "Latency of open()+close() of the marked file, µs (added = minus no monitor)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| scenario | CPUs | no monitor | minimal C | fsmon | added C | added fsmon | added fsmon / added C | per-rep range | target |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
		for _, c := range cases {
			b, f := lat.base[c.baseline], lat.fsmon[c.key]
			target := ""
			if c.key == "a" {
				target = "≤ 1.5 (same CPU)"
			}
			bl := "C allow"
			if c.baseline == "deny" {
				bl = "C deny"
			}
			for _, p := range []struct {
				name             string
				none, base, mine []float64
			}{{"same", lat.none.same, b.same, f.same}, {"cross", lat.none.cross, b.cross, f.cross}} {
				n, bm, fm := median(p.none), median(p.base), median(p.mine)
				t := target
				if p.name == "cross" {
					t = ""
				}
				fmt.Fprintf(w, "| %s (vs %s) | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c.title, bl, p.name,
					us(n), us(bm), us(fm), us(bm-n), us(fm-n), ratio(fm-n, bm-n), perRep(p.mine, p.base, p.none), t)
			}
		}
		fmt.Fprintln(w)
	}
	if lat != nil && has("g") {
		b := lat.base["allow"]
		fmt.Fprintln(w, "g. Collateral: open()+close() of an unmarked file in another directory of the same file system, daemon running the default profile + a protect profile, µs")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| CPUs | no monitor | fsmon | added fsmon | added by minimal C on its marked file | fraction | target |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|")
		for _, p := range []struct {
			name             string
			none, mine, base []float64
			bnone            []float64
		}{{"same", lat.collNon.same, lat.collFs.same, b.same, lat.none.same}, {"cross", lat.collNon.cross, lat.collFs.cross, b.cross, lat.none.cross}} {
			n, fm := median(p.none), median(p.mine)
			cadd := median(p.base) - median(p.bnone)
			fmt.Fprintf(w, "| %s | %s | %s | %+.2f | %s | %s | well under 0.1 |\n", p.name, us(n), us(fm), (fm-n)/1000, us(cadd), ratio(fm-n, cadd))
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "g. Neighbour: open()+close() of a file beside the protected one (same directory, no filter covers it), the same daemon, µs")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| CPUs | no monitor | fsmon | added fsmon | added by minimal C on its marked file | fraction (per-rep range) | target |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|")
		for _, p := range []struct {
			name             string
			none, mine, base []float64
			bnone            []float64
		}{{"same", lat.nbNon.same, lat.nbFs.same, b.same, lat.none.same}, {"cross", lat.nbNon.cross, lat.nbFs.cross, b.cross, lat.none.cross}} {
			n, fm := median(p.none), median(p.mine)
			cadd := median(p.base) - median(p.bnone)
			var per []float64
			for i := range p.mine {
				per = append(per, (p.mine[i]-p.none[i])/(p.base[i]-p.bnone[i]))
			}
			lo, hi := spread(per)
			fmt.Fprintf(w, "| %s | %s | %s | %+.2f | %s | %s (%.2f–%.2f) | ≤ 0.2 |\n", p.name, us(n), us(fm), (fm-n)/1000, us(cadd), ratio(fm-n, cadd), lo, hi)
		}
		fmt.Fprintln(w)
	}
	if len(tf) > 0 {
		fmt.Fprintf(w, "d. Throughput of the notification path: %d writers on CPU 1 each create and write %d new files in a watched directory on %s (2 change events a file); responder on CPU 0; medians of %d\n\n", *writers, *perWriter, fastFS, *tputReps)
		fmt.Fprintln(w, "| responder | events expected | produced/s | handled | handled/s | CPU s per M events | lost | dropped (metric) | kernel overflows |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, t := range []struct {
			name string
			r    []tputRun
		}{{"minimal C (notification group, counts only)", tb}, {"fsmon_exporter", tf}} {
			get := func(f func(tputRun) float64) float64 {
				var v []float64
				for _, r := range t.r {
					v = append(v, f(r))
				}
				return median(v)
			}
			fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %.0f | %.2f | %.0f | %.0f | %.0f |\n", t.name,
				get(func(r tputRun) float64 { return r.expected }), get(func(r tputRun) float64 { return r.produced }),
				get(func(r tputRun) float64 { return r.handled }), get(func(r tputRun) float64 { return r.rate }),
				get(func(r tputRun) float64 { return r.cpuPerM }), get(func(r tputRun) float64 { return r.lost }),
				get(func(r tputRun) float64 { return r.drop }), get(func(r tputRun) float64 { return r.ovfl }))
		}
		var cb, cf []float64
		for i := range tf {
			cb, cf = append(cb, tb[i].cpuPerM), append(cf, tf[i].cpuPerM)
		}
		fmt.Fprintf(w, "\nCPU per event, fsmon / minimal C: %s\n\n", ratio(median(cf), median(cb)))
	}
	if len(sDef.ready) > 0 {
		fmt.Fprintln(w, "e. Start-up (exec to /-/ready 200) and resident memory (VmRSS at ready), not pinned")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| configuration | runs | ready, ms | VmRSS, MiB |")
		fmt.Fprintln(w, "|---|---:|---:|---:|")
		fmt.Fprintf(w, "| embedded default (no --config.file) | %d | %.0f | %.1f |\n", len(sDef.ready), median(sDef.ready), median(sDef.rssMiB))
		fmt.Fprintf(w, "| %d watched files on %s (one recursive monitor filter) | %d | %.0f | %.1f |\n", *treeFiles, fastFS, len(sTree.ready), median(sTree.ready), median(sTree.rssMiB))
		reportContainers(w, ctr, ctrMsg)
	}
	if has("f") {
		fmt.Fprintln(w, "f. Export into the OpenTelemetry path (BenchmarkExportRecords, http/protobuf to the test collector, no drops)")
		fmt.Fprintln(w)
		if len(exp) > 0 {
			lo, hi := spread(exp)
			fmt.Fprintf(w, "records/s: median %.0f of %d runs (%.0f–%.0f)\n\n", median(exp), len(exp), lo, hi)
		} else {
			fmt.Fprintf(w, "records/s: %s\n\n", expMsg)
		}
	}
	if fl != nil {
		reportFlood(w, fl)
	}
	if ex != nil {
		reportExec(w, ex)
	}
	if rd != nil {
		reportReads(w, rd)
	}
	if hs != nil {
		reportHashing(w, hs)
	}
	if cmp != nil {
		reportCompare(w, cmp, fastFS)
	}
	if first != nil {
		reportFirstOpen(w, first, *nFirst)
	}
	fmt.Fprintf(w, "suite time: %s\n", time.Since(began).Round(time.Second))
}
