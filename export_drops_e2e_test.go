package main

// End to end: every event a log sink loses is in
// fsmon_events_dropped_total{stage="export"}, exactly. The real binary,
// opens of a watched file made by this test (report_access: one access
// event per open, never merged by the kernel), a sink that cannot take
// them, and /metrics scraped.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// accessConfig watches two files with report_access in a monitor profile
// named export: every open of either is one access event.
func accessConfig(t *testing.T) (cfg, hot, marker string) {
	t.Helper()
	dir := t.TempDir()
	hot, marker = filepath.Join(dir, "hot"), filepath.Join(dir, "marker")
	for _, f := range []string{hot, marker} {
		if err := os.WriteFile(f, []byte("x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg = filepath.Join(dir, "fsmon.yml")
	writeConfig(t, cfg, fmt.Sprintf(`
profiles:
  - name: export
    host: true
    mode: monitor
    filters:
      - name: hot
        path: %s
        report_access: true
      - name: marker
        path: %s
        report_access: true
`, hot, marker))
	return cfg, hot, marker
}

// dirConfig is accessConfig with n files in one directory under one
// filter (report_access), and the marker apart.
func dirConfig(t *testing.T, n int) (cfg string, files []string, marker string) {
	t.Helper()
	dir := t.TempDir()
	hot := filepath.Join(dir, "hot")
	if err := os.Mkdir(hot, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		f := filepath.Join(hot, fmt.Sprintf("f%d", i))
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	marker = filepath.Join(dir, "marker")
	if err := os.WriteFile(marker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(dir, "fsmon.yml")
	writeConfig(t, cfg, fmt.Sprintf(`
profiles:
  - name: export
    host: true
    mode: monitor
    filters:
      - name: hot
        path: %s
        regex: 'f[0-9]+'
        report_access: true
      - name: marker
        path: %s
        report_access: true
`, hot, marker))
	return cfg, files, marker
}

// openN opens and closes path n times from this process. Each open is a
// permission event the daemon answers before the open returns.
func openN(t *testing.T, path string, n int) {
	t.Helper()
	for range n {
		f, err := os.Open(path)
		if err != nil {
			t.Fatalf("open %s: %v", path, err)
		}
		f.Close()
	}
}

// counter reads one counter series from /metrics, 0 when absent.
func (d *daemon) counter(t *testing.T, series string) uint64 {
	t.Helper()
	resp, err := http.Get("http://" + d.addr + "/metrics")
	if err != nil {
		select {
		case werr := <-d.done:
			t.Fatalf("the daemon exited (%v); stderr:\n%s", werr, d.stderr.String())
		case <-time.After(5 * time.Second):
		}
		t.Fatalf("scrape: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	var s string
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			s = v
		}
	}
	if s == "" {
		return 0
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("%s = %q", series, s)
	}
	return uint64(f)
}

const (
	producedSeries    = `fsmon_events_total{event="access",op="open",profile="export"}`
	exportDropSeries  = `fsmon_events_dropped_total{stage="export"}`
	reportQueueSeries = `fsmon_events_dropped_total{stage="report_queue"}`
)

// waitCounter polls series until cond holds; the deadline only bounds a
// failure.
func (d *daemon) waitCounter(t *testing.T, what, series string, d2 time.Duration, cond func(uint64) bool) uint64 {
	t.Helper()
	deadline := time.Now().Add(d2)
	for {
		v := d.counter(t, series)
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s = %d after %v", what, series, v, d2)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitReported waits until the engine has handed all of n opens to the
// sinks (or lost them in its report queue) and returns how many it
// handed over: the events produced for the log sinks.
func (d *daemon) waitReported(t *testing.T, n uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		produced, lost := d.counter(t, producedSeries), d.counter(t, reportQueueSeries)
		if produced+lost >= n {
			if produced+lost != n {
				t.Fatalf("%d events produced and %d lost in the report queue for %d opens", produced, lost, n)
			}
			return produced
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d opens reported after a minute", produced+lost, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testCollector is the test collector (tools/otelcol) on a fixed loopback
// address, restartable there, each run writing a file of its own.
type testCollector struct {
	t      *testing.T
	bin    string
	dir    string
	addr   string
	runs   int
	files  []string
	cmd    *exec.Cmd
	out    *testroot.Buffer
	exited chan struct{}
}

func newTestCollector(t *testing.T) *testCollector {
	t.Helper()
	c := &testCollector{
		t:    t,
		bin:  testroot.EnvPath(t, "OTELCOL_BINARY", "make builds tools/otelcol and sets it"),
		dir:  t.TempDir(),
		addr: testroot.FreeAddr(t),
	}
	t.Cleanup(func() {
		if c.cmd != nil {
			c.cmd.Process.Kill()
			<-c.exited
		}
	})
	return c
}

func (c *testCollector) start() {
	c.t.Helper()
	c.runs++
	logs := filepath.Join(c.dir, fmt.Sprintf("logs-%d.json", c.runs))
	c.files = append(c.files, logs)
	cfg := filepath.Join(c.dir, fmt.Sprintf("otelcol-%d.yaml", c.runs))
	writeConfig(c.t, cfg, fmt.Sprintf(`receivers:
  otlp:
    protocols:
      http:
        endpoint: %q
exporters:
  file/logs: {path: %q, flush_interval: 100ms}
service:
  telemetry: {metrics: {level: none}, logs: {level: warn}}
  pipelines:
    logs: {receivers: [otlp], exporters: [file/logs]}
`, c.addr, logs))
	c.out = &testroot.Buffer{}
	c.cmd = exec.Command(c.bin, "--config", cfg)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { cmd.Wait(); close(exited) }(c.cmd, c.exited)
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", c.addr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			return
		}
		select {
		case <-c.exited:
			c.t.Fatalf("collector exited: %s", c.out.String())
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("collector not listening on %s after 30s: %s", c.addr, c.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the collector with SIGTERM: it answers what it took and
// flushes its file; then nothing listens on its address.
func (c *testCollector) stop() {
	c.t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		c.t.Fatalf("collector ignored SIGTERM for 20s")
	}
	c.cmd = nil
}

// received sums the count attribute of the records that arrived, by
// file.path, over every run so far.
func (c *testCollector) received(t *testing.T) map[string]uint64 {
	t.Helper()
	got := map[string]uint64{}
	for _, f := range c.files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // nothing written yet
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if line == "" {
				continue
			}
			var doc struct {
				ResourceLogs []struct {
					ScopeLogs []struct {
						LogRecords []struct {
							Attributes []otlpKV `json:"attributes"`
						} `json:"logRecords"`
					} `json:"scopeLogs"`
				} `json:"resourceLogs"`
			}
			if err := json.Unmarshal([]byte(line), &doc); err != nil {
				// A line being written at the moment of reading; the
				// file exporter writes whole lines, so only the last.
				continue
			}
			for _, rl := range doc.ResourceLogs {
				for _, sl := range rl.ScopeLogs {
					for _, lr := range sl.LogRecords {
						a := attrs(lr.Attributes)
						n, err := strconv.ParseUint(a["count"], 10, 64)
						if err != nil {
							t.Fatalf("record without a count: %v", a)
						}
						got[a["file.path"]] += n
					}
				}
			}
		}
	}
	return got
}

func (c *testCollector) waitReceived(t *testing.T, what string, cond func(map[string]uint64) bool) map[string]uint64 {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := c.received(t)
		if cond(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the collector has %v after 60s", what, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var dropLine = regexp.MustCompile(`msg="OpenTelemetry export lost events".*? dropped=(\d+) total=(\d+) queue_full=(\d+) logs_lost=(\d+) spans_lost=(\d+)`)

// TestExportDropsCountedOTel: the collector goes away while events keep
// coming, so the exporter's queue overflows and the SDK's exports fail
// after their timeout; it comes back. Every event is then either at the
// collector or in fsmon_events_dropped_total{stage="export"}: delivered +
// dropped == produced, exactly. Unfolded (one record an event) and folded
// (each file opened twice in a row: records of count 2, so a record lost
// is two events lost; delivered is the sum of the count attributes).
//
// Where it could be inexact, and how that is ruled out: a request the
// collector took but did not answer before the export timeout counts as
// lost and may still arrive (docs/opentelemetry.md). The collector is
// stopped only once everything sent has arrived, and started again only
// once everything produced meanwhile is counted lost, so no request is in
// progress at either moment; while it is down requests are refused at
// once; while up it answers in far less than the timeout.
//
// Why the final count is final without a settle time: the path from the
// engine to the collector is FIFO (report queue, folds by deadline,
// export queue, the SDK's queue, one export at a time), so once the
// marker file's access, the last event produced, has arrived, every
// earlier event has been exported or counted.
func TestExportDropsCountedOTel(t *testing.T) {
	t.Run("unfolded", func(t *testing.T) { testExportDropsOTel(t, 1, 0) })
	t.Run("folded", func(t *testing.T) { testExportDropsOTel(t, 2, 200*time.Millisecond) })
}

// testExportDropsOTel opens each file `times` times in a row, with the
// fold window given (0: no folding).
func testExportDropsOTel(t *testing.T, times int, window time.Duration) {
	col := newTestCollector(t)
	col.start()
	// Records: before the outage, during it (more than the exporter's
	// queue, 8192, and the SDK's, 4096, hold, with room for 2048 more a
	// second as batches fail: the flood outruns that even on a loaded
	// machine) and after.
	const before, outage, after = 200, 30000, 200
	cfg, files, marker := dirConfig(t, before+outage+after)
	// SDK queue = batch = 4096 and a 2 s export timeout: while the
	// collector is down, what the queues hold fails in a few batches.
	d := startDaemonEnv(t, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + col.addr,
		"OTEL_BLRP_SCHEDULE_DELAY=50",
		"OTEL_BLRP_EXPORT_TIMEOUT=2000",
		"OTEL_BLRP_MAX_QUEUE_SIZE=4096",
		"OTEL_BLRP_MAX_EXPORT_BATCH_SIZE=4096",
	}, "--config.file="+cfg, "--no-events.stdout", fmt.Sprintf("--events.fold-window=%v", window))
	sum := func(m map[string]uint64) (n uint64) {
		for _, v := range m {
			n += v
		}
		return n
	}
	opened := uint64(0)
	open := func(paths []string) {
		for _, p := range paths {
			openN(t, p, times)
		}
		opened += uint64(len(paths) * times)
	}

	// Up: delivered, nothing lost.
	open(files[:before])
	col.waitReceived(t, "the events before the outage", func(m map[string]uint64) bool { return sum(m) >= opened })
	if n := d.counter(t, exportDropSeries); n != 0 {
		t.Fatalf("%d events lost with the collector up", n)
	}
	col.stop()
	delivered := sum(col.received(t)) // final for this run: the file is flushed
	if delivered != opened {
		t.Fatalf("the collector has %d events, want %d", delivered, opened)
	}

	// Down. What the queues hold fails at the export timeout; the rest
	// finds the queue full. All of it must be counted before the
	// collector comes back (the deadline only bounds a failure: the
	// queues hold at most 8192 + 4096 records, 4 batches of 2 s).
	start := time.Now()
	open(files[before : before+outage])
	t.Logf("%d opens in %v", outage*times, time.Since(start))
	produced := d.waitReported(t, opened)
	d.waitCounter(t, "every event produced while the collector was down counted as lost", exportDropSeries,
		20*time.Second, func(v uint64) bool { return v >= produced-delivered })

	// Up again: later events arrive; the marker's arrival ends the run.
	col.start()
	open(files[before+outage:])
	openN(t, marker, 1)
	opened++
	got := col.waitReceived(t, "the marker", func(m map[string]uint64) bool { return m[marker] >= 1 })
	produced = d.counter(t, producedSeries)
	dropped := d.counter(t, exportDropSeries)
	lostEarlier := d.counter(t, reportQueueSeries)
	delivered = sum(got)
	t.Logf("opened %d, produced %d (report queue lost %d), delivered %d, dropped %d", opened, produced, lostEarlier, delivered, dropped)
	if produced+lostEarlier != opened {
		t.Errorf("produced %d + lost in the report queue %d != %d opens: the premise of the test is wrong", produced, lostEarlier, opened)
	}
	if delivered+dropped != produced {
		t.Fatalf("delivered %d + dropped %d = %d, want produced %d exactly", delivered, dropped, delivered+dropped, produced)
	}
	var late uint64
	for _, f := range files[before+outage:] {
		late += got[f]
	}
	if late != uint64(after*times) || got[marker] != 1 {
		t.Errorf("after the outage the collector got %d events of the %d and %d markers", late, after*times, got[marker])
	}

	// The exporter's own account, logged at shutdown, agrees, and both
	// ways of losing an event were taken (else the accounting of one of
	// them was not under test).
	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	m := dropLine.FindAllStringSubmatch(d.stderr.String(), -1)
	if len(m) == 0 {
		t.Fatalf("no drop line in the log:\n%s", d.stderr.String())
	}
	last := m[len(m)-1]
	total, _ := strconv.ParseUint(last[2], 10, 64)
	queueFull, _ := strconv.ParseUint(last[3], 10, 64)
	logsLost, _ := strconv.ParseUint(last[4], 10, 64)
	if total != dropped {
		t.Errorf("the exporter logged %d lost in total, the metric said %d", total, dropped)
	}
	if queueFull == 0 || logsLost == 0 {
		t.Errorf("queue_full=%d logs_lost=%d: the outage did not exercise both kinds of loss", queueFull, logsLost)
	}
}

// TestExportDropsCountedStdout: a stdout nobody reads for a while. The
// JSON lines queue fills behind the full pipe and counts what it drops
// in stage="export"; once the reader resumes, every event is a line or a
// drop: lines + dropped == produced, exactly. Final without a settle
// time: the queue and the pipe are FIFO, so once the marker's line is
// read every earlier event has been written or dropped.
func TestExportDropsCountedStdout(t *testing.T) {
	testroot.Require(t)
	bin := testroot.Binary(t)
	cfg, hot, marker := accessConfig(t)
	// A small queue (it is also the engine's report queue: losses there
	// are not produced events and are checked apart).
	d, r := startDaemonPipe(t, bin, "--events.queue-size=1000", "--config.file="+cfg)

	// Nobody reads: the pipe (64 KiB, some 200 lines) and the queue
	// (1000) fill, and the rest is dropped.
	const n = 5000
	openN(t, hot, n)
	produced := d.waitReported(t, n)
	dropped := d.counter(t, exportDropSeries) // final for these: none is left to come
	if dropped == 0 {
		t.Fatalf("nothing dropped behind a stalled stdout: the accounting is untested")
	}
	if dropped > produced {
		t.Fatalf("dropped %d of %d events produced", dropped, produced)
	}

	// The reader resumes and reads what the queue took. Lines are
	// counted by file as they come.
	type tally struct{ hot, marker uint64 }
	seen := make(chan tally, 1)
	readErr := make(chan error, 1)
	go func() {
		var c tally
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev map[string]any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				readErr <- fmt.Errorf("not a JSON line: %q", sc.Text())
				return
			}
			k, _ := ev["count"].(float64)
			switch ev["file.path"] {
			case hot:
				c.hot += uint64(k)
			case marker:
				c.marker += uint64(k)
			}
			select {
			case <-seen:
			default:
			}
			seen <- c
		}
		readErr <- sc.Err()
	}()
	var got tally
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.After(time.Minute)
		for !cond() {
			select {
			case got = <-seen:
			case err := <-readErr:
				t.Fatalf("reading stdout: %v", err)
			case <-deadline:
				t.Fatalf("%s: %+v read after a minute (produced %d, dropped %d)", what, got, produced, dropped)
			}
		}
	}
	// Every event not counted as dropped is written: the queue empties.
	wait("the events not dropped", func() bool { return got.hot >= produced-dropped })
	// The marker, queued behind all of them, ends the run.
	openN(t, marker, 1)
	wait("the marker", func() bool { return got.marker >= 1 })
	produced = d.counter(t, producedSeries)
	dropped = d.counter(t, exportDropSeries)
	t.Logf("opened %d, produced %d, written %d, dropped %d", n+1, produced, got.hot+got.marker, dropped)
	if got.marker != 1 {
		t.Fatalf("marker written %d times", got.marker)
	}
	if got.hot+got.marker+dropped != produced {
		t.Fatalf("written %d + dropped %d = %d, want produced %d exactly",
			got.hot+got.marker, dropped, got.hot+got.marker+dropped, produced)
	}
	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}

// startDaemonPipe starts the daemon with its stdout on a pipe whose read
// end the test holds (and reads when it wants), and waits until ready.
func startDaemonPipe(t *testing.T, bin string, args ...string) (*daemon, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	addr := testroot.FreeAddr(t)
	d := &daemon{addr: addr, stderr: &testroot.Buffer{}, done: make(chan error, 1)}
	// A state directory of its own: a baseline the machine's daemon (or
	// another test) left would add its changed-while-down events.
	d.cmd = exec.Command(bin, append([]string{"--web.listen-address=" + addr, "--events.fold-window=0", "--state.dir=" + t.TempDir()}, args...)...)
	d.cmd.Stdout = w
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			<-d.done
		}
		r.Close()
		if t.Failed() {
			t.Logf("daemon stderr:\n%s", d.stderr.String())
		}
	})
	waitReady(t, d)
	return d, r
}

// TestClosedStdoutNeitherKillsNorLoses: whoever reads stdout goes away
// (a log shipper restarted, `| head`). The daemon must keep running and
// protecting (a write to a closed pipe would otherwise kill it with
// SIGPIPE), and the events it can no longer write are lost, so counted in
// stage="export". The count is awaited (the writes happen on the stdout
// queue's goroutine); that the scrape showing it is answered at all proves
// the daemon survived the failed writes.
func TestClosedStdoutNeitherKillsNorLoses(t *testing.T) {
	testroot.Require(t)
	bin := testroot.Binary(t)
	cfg, hot, _ := accessConfig(t)
	d, r := startDaemonPipe(t, bin, "--config.file="+cfg)
	r.Close() // before any event: nothing is ever written
	const n = 100
	openN(t, hot, n)
	produced := d.waitReported(t, n)
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case err := <-d.done:
			t.Fatalf("the daemon died writing to a closed stdout: %v", err)
		default:
		}
		if code, err := readyCodeErr(d.addr); err != nil || code != 200 {
			t.Fatalf("the daemon stopped answering after writing to a closed stdout: %d %v", code, err)
		}
		dropped := d.counter(t, exportDropSeries)
		if dropped > produced {
			t.Fatalf("dropped %d of %d events produced", dropped, produced)
		}
		if dropped == produced {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events lost to a closed stdout counted after a minute", dropped, produced)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}

func readyCodeErr(addr string) (int, error) {
	resp, err := http.Get("http://" + addr + "/-/ready")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// waitReady polls /-/ready until 200, failing at once if the daemon exits.
func waitReady(t *testing.T, d *daemon) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if code, err := readyCodeErr(d.addr); err == nil && code == 200 {
			return
		}
		select {
		case err := <-d.done:
			t.Fatalf("daemon exited before ready: %v\n%s", err, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready within 60s\n%s", d.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
