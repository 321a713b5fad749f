package otel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// clearOTelEnv unsets every OTEL_* variable for the test (restored after).
func clearOTelEnv(t testing.TB) {
	t.Helper()
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "OTEL_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

// useCollector points the exporter at c over protocol, with short batch
// delays so that tests do not wait for the SDK's 1 s and 5 s defaults.
func useCollector(t testing.TB, c *collector, protocol string) {
	t.Helper()
	clearOTelEnv(t)
	addr := c.httpAddr
	if protocol == "grpc" {
		addr = c.grpcAddr
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
	t.Setenv("OTEL_BLRP_SCHEDULE_DELAY", "100")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

var when = time.Date(2026, 3, 4, 5, 6, 7, 123456789, time.UTC)

func deniedEvent() *fsmon.Event {
	return &fsmon.Event{
		Time: when, Kind: fsmon.KindDenied, Op: fsmon.OpOpen, Mode: fsmon.ModeProtect,
		Profile: "web", Filter: "shadow", Path: "/etc/shadow", Count: 3,
		Process: fsmon.Process{
			PID: 4242, ParentPID: 1, ExecutablePath: "/usr/bin/cat", ExecutableName: "cat",
			CommandLine: "cat /etc/shadow", UserID: 0, LoaderEnv: fsmon.LoaderPreload, UserName: "root",
			ParentExecutablePath: "/usr/bin/bash", ParentExecutableName: "bash", ParentCommandLine: "bash -l",
		},
		Container: fsmon.Container{ID: strings.Repeat("ab", 32), Name: "web-1", Image: "registry/web:2",
			Pod: fsmon.Pod{Namespace: "prod", Name: "web-7d9f", UID: "0c1d-22", ContainerName: "web-1"}},
		Decision: 1500 * time.Microsecond,
	}
}

func TestRecordAndSpanArrive(t *testing.T) {
	for _, protocol := range []string{"http/protobuf", "grpc"} {
		t.Run(protocol, func(t *testing.T) {
			c := startCollector(t)
			useCollector(t, c, protocol)
			t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test,k8s.node.name=node-1")

			e, err := New(t.Context(), Options{Logger: testLogger(t), ServiceVersion: "1.2.3"})
			if err != nil {
				t.Fatal(err)
			}
			if !e.Enabled() {
				t.Fatal("not enabled with OTEL_EXPORTER_OTLP_ENDPOINT set")
			}
			e.Handle(deniedEvent())
			violation := &fsmon.Event{
				Time: when.Add(time.Second), Kind: fsmon.KindViolation, Op: fsmon.OpOpen,
				Path: "/etc/gshadow", Count: 1, Process: fsmon.Process{PID: 7, UserID: -1},
				Decision: 2 * time.Millisecond,
			}
			e.Handle(violation)
			change := &fsmon.Event{Time: when.Add(2 * time.Second), Kind: fsmon.KindChange, Op: fsmon.OpWrite,
				Path: "/etc/passwd", Count: 1, Process: fsmon.Process{UserID: -1}}
			e.Handle(change)
			if err := e.Shutdown(shutdownCtx(t, 20*time.Second)); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			if d := e.Dropped(); d != 0 {
				t.Fatalf("dropped %d", d)
			}

			var recs []logRecordJSON
			waitFor(t, 15*time.Second, "3 log records", func() bool { recs = c.logRecords(); return len(recs) >= 3 })
			var spans []spanJSON
			waitFor(t, 15*time.Second, "2 spans", func() bool { spans = c.spans(); return len(spans) >= 2 })
			if len(recs) != 3 || len(spans) != 2 {
				t.Fatalf("got %d records and %d spans, want 3 and 2", len(recs), len(spans))
			}

			r := recs[0]
			if r.EventName != "fsmon.file.denied" {
				t.Errorf("EventName %q", r.EventName)
			}
			if r.SeverityNumber != 13 || r.SeverityText != "WARN" {
				t.Errorf("severity %d %q, want 13 WARN", r.SeverityNumber, r.SeverityText)
			}
			if r.TimeUnixNano != strconv.FormatInt(when.UnixNano(), 10) {
				t.Errorf("timestamp %s, want the kernel's %d", r.TimeUnixNano, when.UnixNano())
			}
			if obs, _ := strconv.ParseInt(r.ObservedTimeUnixNano, 10, 64); time.Since(time.Unix(0, obs)) > time.Minute {
				t.Errorf("observed timestamp %s is not now", r.ObservedTimeUnixNano)
			}
			want := map[string]string{
				"event": "denied", "op": "open", "mode": "protect", "profile": "web", "filter": "shadow",
				"count": "3", "file.path": "/etc/shadow", "process.pid": "4242", "process.parent_pid": "1",
				"process.executable.path": "/usr/bin/cat", "process.executable.name": "cat",
				"process.command_line": "cat /etc/shadow", "process.user.id": "0",
				"process.loader_env": "LD_PRELOAD", "process.user.name": "root",
				"process.parent.executable.path": "/usr/bin/bash", "process.parent.executable.name": "bash",
				"process.parent.command_line": "bash -l",
				"container.id":                strings.Repeat("ab", 32), "container.name": "web-1",
				"container.image.name": "registry/web:2", "k8s.namespace.name": "prod", "k8s.pod.name": "web-7d9f",
				"k8s.pod.uid": "0c1d-22", "k8s.container.name": "web-1",
			}
			checkAttrs(t, "denied record", r.Attributes, want)
			host, _ := os.Hostname()
			checkAttrs(t, "resource", r.resource, map[string]string{
				"service.name": "fsmon_exporter", "service.version": "1.2.3", "host.name": host,
				"deployment.environment.name": "test", "k8s.node.name": "node-1",
			})
			if r.scope != ScopeName {
				t.Errorf("scope %q", r.scope)
			}

			if recs[1].SeverityText != "WARN" || recs[1].EventName != "fsmon.file.violation" {
				t.Errorf("violation: %q %q", recs[1].EventName, recs[1].SeverityText)
			}
			ch := recs[2]
			if ch.SeverityNumber != 9 || ch.SeverityText != "INFO" || ch.EventName != "fsmon.file.change" {
				t.Errorf("change: %q %d %q", ch.EventName, ch.SeverityNumber, ch.SeverityText)
			}
			// Unknown facts are absent, not invented.
			for _, k := range []string{"process.pid", "process.user.id", "container.id", "container.name", "container.image.name",
				"k8s.namespace.name", "k8s.pod.name", "k8s.pod.uid", "k8s.container.name", "mode", "profile", "process.executable.path", "process.loader_env"} {
				if v, ok := ch.Attributes.get(k); ok {
					t.Errorf("change record has %s=%q for an unknown value", k, v)
				}
			}

			byName := map[string]spanJSON{}
			for _, s := range spans {
				p, _ := s.Attributes.get("file.path")
				byName[p] = s
			}
			ds := byName["/etc/shadow"]
			if ds.Name != "fsmon.permission" {
				t.Errorf("span name %q", ds.Name)
			}
			start, _ := strconv.ParseInt(ds.StartTimeUnixNano, 10, 64)
			end, _ := strconv.ParseInt(ds.EndTimeUnixNano, 10, 64)
			if start != when.UnixNano() || time.Duration(end-start) != 1500*time.Microsecond {
				t.Errorf("denied span %d..%d, want start %d lasting 1.5ms", start, end, when.UnixNano())
			}
			if ds.Status.Code != 2 {
				t.Errorf("denied span status %d, want 2 (Error)", ds.Status.Code)
			}
			checkAttrs(t, "denied span", ds.Attributes, want)
			vs := byName["/etc/gshadow"]
			vstart, _ := strconv.ParseInt(vs.StartTimeUnixNano, 10, 64)
			vend, _ := strconv.ParseInt(vs.EndTimeUnixNano, 10, 64)
			if time.Duration(vend-vstart) != 2*time.Millisecond || vs.Status.Code == 2 {
				t.Errorf("violation span lasts %v with status %d", time.Duration(vend-vstart), vs.Status.Code)
			}
			if v, _ := vs.resource.get("service.name"); v != "fsmon_exporter" {
				t.Errorf("span resource service.name %q", v)
			}
		})
	}
}

func checkAttrs(t *testing.T, what string, got attrs, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if g, ok := got.get(k); !ok || g != w {
			t.Errorf("%s: %s = %q (present %v), want %q", what, k, g, ok, w)
		}
	}
}

func TestServiceNameFromEnv(t *testing.T) {
	c := startCollector(t)
	useCollector(t, c, "http/protobuf")
	t.Setenv("OTEL_SERVICE_NAME", "fsmon-node-a")
	e, err := New(t.Context(), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	e.Handle(deniedEvent())
	if err := e.Shutdown(shutdownCtx(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	var recs []logRecordJSON
	waitFor(t, 15*time.Second, "a record", func() bool { recs = c.logRecords(); return len(recs) >= 1 })
	if v, _ := recs[0].resource.get("service.name"); v != "fsmon-node-a" {
		t.Errorf("service.name %q, want OTEL_SERVICE_NAME's", v)
	}
}

// sendPaced hands n events to e without outrunning it: it waits while
// the queue is half full, as an engine would be paced by the kernel.
func sendPaced(e *Exporter, n int, mk func(i int) *fsmon.Event) {
	for i := range n {
		for e.Pending() > e.queueCap/2 {
			time.Sleep(time.Millisecond)
		}
		e.Handle(mk(i))
	}
}

func seqEvent(i int) *fsmon.Event {
	return &fsmon.Event{
		Time: time.Now(), Kind: fsmon.KindAccess, Op: fsmon.OpOpen, Mode: fsmon.ModeMonitor,
		Profile: "host", Filter: "etc", Path: "/etc/f" + strconv.Itoa(i), Count: 1,
		Process: fsmon.Process{PID: int32(1000 + i%50), ExecutablePath: "/usr/bin/cat", ExecutableName: "cat", UserID: 1000},
	}
}

// foldedEvent is seqEvent as the folder hands it over: it stands for
// 1 to 4 events (count), so that the tests of the accounting count
// events, not records.
func foldedEvent(i int) *fsmon.Event {
	ev := seqEvent(i)
	ev.Count = 1 + i%4
	return ev
}

// eventsOf is the number of events records 0..n-1 of foldedEvent stand for.
func eventsOf(from, n int) uint64 {
	var sum uint64
	for i := from; i < from+n; i++ {
		sum += uint64(foldedEvent(i).Count)
	}
	return sum
}

func TestHundredThousandNothingLost(t *testing.T) {
	const n = 100_000
	c := startCollector(t)
	useCollector(t, c, "http/protobuf")
	e, err := New(t.Context(), Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sendPaced(e, n, seqEvent)
	if err := e.Shutdown(shutdownCtx(t, 60*time.Second)); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	t.Logf("%d events exported in %v", n, time.Since(start))
	if d := e.Dropped(); d != 0 {
		t.Fatalf("dropped %d with a collector that keeps up (%+v)", d, e.Stats())
	}
	var recs []logRecordJSON
	waitFor(t, 60*time.Second, "100,000 records", func() bool { recs = c.logRecords(); return len(recs) >= n })
	if len(recs) != n {
		t.Fatalf("received %d records, want %d", len(recs), n)
	}
	if got := countReceived(recs); got != n {
		t.Fatalf("count attributes add up to %d, want %d", got, n)
	}
}

// TestCollectorRestart stops the collector mid-run and starts it again:
// the later events arrive, and what the outage cost is exactly what
// Dropped reports, in events: the records are folded ones (count 1 to 4),
// and a lost record of count 3 is 3 events lost. Over HTTP the exporter
// does not retry a refused connection itself, so this also tests
// countingExporter's retry.
func TestCollectorRestart(t *testing.T) {
	for _, protocol := range []string{"http/protobuf", "grpc"} {
		t.Run(protocol, func(t *testing.T) { testCollectorRestart(t, protocol) })
	}
}

func testCollectorRestart(t *testing.T, protocol string) {
	c := startCollector(t)
	useCollector(t, c, protocol)
	// Small queues, so that the outage overflows them and the accounting
	// is tested on real drops.
	t.Setenv("OTEL_BLRP_MAX_QUEUE_SIZE", "1000")
	e, err := New(t.Context(), Options{Logger: testLogger(t), QueueSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	const before, during, after = 5000, 20000, 5000
	sent := 0
	send := func(n int, paced bool) {
		for i := range n {
			if paced {
				for e.Pending() > e.queueCap/2 {
					time.Sleep(time.Millisecond)
				}
			}
			e.Handle(foldedEvent(sent))
			sent++
			_ = i
		}
	}
	send(before, true)
	waitFor(t, 30*time.Second, "the first events", func() bool { return len(c.logRecords()) >= before })

	c.stop()
	// The collector is down: these overflow both queues.
	for range during / 1000 {
		send(1000, false)
		time.Sleep(100 * time.Millisecond)
	}
	c.start()
	restartedAt := sent
	send(after, true)
	if err := e.Shutdown(shutdownCtx(t, 60*time.Second)); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	c.stop() // flush the files
	recs := c.logRecords()
	received := countReceived(recs)
	dropped := e.Dropped()
	events := eventsOf(0, sent)
	s := e.Stats()
	t.Logf("sent %d records of %d events, received %d, dropped %d (%+v)", sent, events, received, dropped, s)
	if received+dropped != events {
		t.Fatalf("sent %d events != received %d + dropped %d", events, received, dropped)
	}
	if s.Queue == 0 {
		t.Fatalf("nothing dropped (%+v): the outage did not overflow the queues, the accounting is untested", s)
	}
	late := 0
	for _, r := range recs {
		p, _ := r.Attributes.get("file.path")
		if i, err := strconv.Atoi(strings.TrimPrefix(p, "/etc/f")); err == nil && i >= restartedAt {
			late++
			if c, _ := r.Attributes.get("count"); c != strconv.Itoa(foldedEvent(i).Count) {
				t.Errorf("record %d has count %s, want %d", i, c, foldedEvent(i).Count)
			}
		}
	}
	if late != after {
		t.Fatalf("the restarted collector got %d of the %d later events", late, after)
	}
}

// TestNothingSetNothingConnects: with no OTEL_* variable naming an
// exporter (or with the SDK disabled, or logs set to none), no exporter
// is built and nothing connects, neither to an endpoint a variable names
// nor to the SDK's defaults (localhost:4317 and :4318). The defaults are
// watched in a network namespace of the test's own, where the ports are
// free and no other test on the machine can connect to them or be hit by
// the positive control; without root they are watched here if free.
func TestNothingSetNothingConnects(t *testing.T) {
	const name = "TestNothingSetNothingConnects"
	if os.Getenv(inNetnsEnv) != "" {
		loopbackUp(t)
		nothingConnects(t, true)
		return
	}
	if os.Geteuid() == 0 {
		if !runInNetns(t, name) {
			t.Fatal("root, but no network namespace could be made")
		}
		return
	}
	nothingConnects(t, false)
}

// nothingConnects is TestNothingSetNothingConnects's body. private: it
// runs in a network namespace of its own, so the default ports must be
// free and the SDK may be pointed at them for the positive control.
func nothingConnects(t *testing.T, private bool) {
	clearOTelEnv(t)
	// Where the SDK would connect by default, both address families
	// (localhost may resolve to either).
	var defaults []*connWatch
	var taken []string
	for _, addr := range []string{"127.0.0.1:4317", "127.0.0.1:4318", "[::1]:4317", "[::1]:4318"} {
		w, err := listenWatch(t, addr)
		switch {
		case err == nil:
			defaults = append(defaults, w)
		case errors.Is(err, syscall.EADDRNOTAVAIL) && strings.HasPrefix(addr, "[::1]"):
			// No IPv6 loopback: nothing can connect there either.
		case private:
			t.Fatalf("cannot listen on %s in a network namespace of our own: %v", addr, err)
		default:
			taken = append(taken, addr)
		}
	}
	// An endpoint the variables name: a listener of the test's own.
	own, err := listenWatch(t, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ownURL := "http://" + own.addr()

	cases := []struct {
		name string
		env  map[string]string
	}{
		{"nothing set", map[string]string{}},
		{"sdk disabled", map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": ownURL,
			"OTEL_TRACES_EXPORTER": "otlp", "OTEL_LOGS_EXPORTER": "otlp"}},
		{"sdk disabled grpc", map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": ownURL,
			"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_EXPORTER": "otlp"}},
		{"logs none", map[string]string{"OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ownURL}},
		{"logs none, logs endpoint", map[string]string{"OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": ownURL + "/v1/logs"}},
		{"traces endpoint alone", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ownURL + "/v1/traces"}},
		{"resource only", map[string]string{"OTEL_SERVICE_NAME": "x", "OTEL_RESOURCE_ATTRIBUTES": "a=b", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}},
		{"traces none alone", map[string]string{"OTEL_TRACES_EXPORTER": "none"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			e, err := New(t.Context(), Options{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if e.Enabled() {
				t.Fatal("enabled")
			}
			// No provider, hence no exporter and no goroutine of the SDK:
			// nothing exists that could connect later.
			if e.lp != nil || e.tp != nil || e.queue != nil {
				t.Fatalf("disabled, but built logs %v, traces %v, queue %v", e.lp != nil, e.tp != nil, e.queue != nil)
			}
			e.Handle(deniedEvent())
			if err := e.Shutdown(shutdownCtx(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			if d := e.Dropped(); d != 0 {
				t.Errorf("disabled exporter counts %d drops", d)
			}
			for _, w := range append([]*connWatch{own}, defaults...) {
				if c := w.others(t); len(c) != 0 {
					t.Errorf("%d connections to %s: %v", len(c), w.addr(), c)
				}
			}
		})
	}

	// Positive controls: the watchers do see the SDK connect, when it is
	// asked to, at a named endpoint and (in our own namespace only, where
	// no other test listens) at its defaults.
	type control struct {
		name string
		env  map[string]string
		w    []*connWatch
	}
	controls := []control{{"named endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ownURL}, []*connWatch{own}}}
	if private {
		byPort := map[string][]*connWatch{}
		for _, w := range defaults {
			_, port, _ := net.SplitHostPort(w.addr())
			byPort[port] = append(byPort[port], w)
		}
		controls = append(controls,
			control{"default http", map[string]string{"OTEL_LOGS_EXPORTER": "otlp"}, byPort["4318"]},
			control{"default grpc", map[string]string{"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, byPort["4317"]})
	}
	for _, c := range controls {
		t.Run("control "+c.name, func(t *testing.T) {
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			t.Setenv("OTEL_BLRP_SCHEDULE_DELAY", "10")
			e, err := New(t.Context(), Options{Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if !e.Enabled() {
				t.Fatal("not enabled")
			}
			e.Handle(deniedEvent())
			waitAny(t, c.w, c.name)
			_ = e.Shutdown(shutdownCtx(t, 100*time.Millisecond)) // the watcher never answers: lost, and that is fine
		})
	}
	if len(taken) > 0 {
		testroot.Unavailable(t, "ports %v are taken, so the SDK's defaults were not watched (run as root: a network namespace of its own)", taken)
	}
}

// waitAny waits until one of ws sees a connection.
func waitAny(t testing.TB, ws []*connWatch, what string) {
	t.Helper()
	if len(ws) == 0 {
		t.Errorf("%s: nothing to watch", what)
		return
	}
	deadline := time.After(30 * time.Second)
	for {
		for _, w := range ws {
			w.mu.Lock()
			for _, r := range w.remotes {
				if !w.markers[r] {
					w.mu.Unlock()
					return
				}
			}
			w.mu.Unlock()
		}
		select {
		case <-deadline:
			t.Errorf("%s: no connection to any of %d listeners within 30s", what, len(ws))
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestEnvRule(t *testing.T) {
	for _, tc := range []struct {
		env          map[string]string
		logs, traces bool
	}{
		{map[string]string{}, false, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, true, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://x:4318/v1/logs"}, true, false},
		{map[string]string{"OTEL_LOGS_EXPORTER": "console"}, true, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, false, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, true, false},
		{map[string]string{"OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, false, false},
		{map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, false, true},
		{map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_LOGS_EXPORTER": "otlp"}, false, false},
		{map[string]string{"OTEL_SDK_DISABLED": "false", "OTEL_LOGS_EXPORTER": "otlp"}, true, false},
	} {
		t.Run(fmt.Sprint(tc.env), func(t *testing.T) {
			clearOTelEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			s, err := envSignals()
			if err != nil {
				t.Fatal(err)
			}
			if s.logs != tc.logs || s.traces != tc.traces {
				t.Errorf("logs %v traces %v, want %v %v", s.logs, s.traces, tc.logs, tc.traces)
			}
		})
	}
}

// TestSpansOnlyHint: spans on with nothing said about log records is
// told at start-up, with how to turn the records on (the README's example
// used to send spans and, silently, no records); OTEL_LOGS_EXPORTER=none
// says it is meant, and gets no such line. The endpoint is never
// connected: nothing is exported.
func TestSpansOnlyHint(t *testing.T) {
	for _, tc := range []struct {
		logsExporter string
		hint         bool
	}{{"", true}, {"none", false}} {
		t.Run(fmt.Sprintf("OTEL_LOGS_EXPORTER=%q", tc.logsExporter), func(t *testing.T) {
			clearOTelEnv(t)
			t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
			t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1")
			if tc.logsExporter != "" {
				t.Setenv("OTEL_LOGS_EXPORTER", tc.logsExporter)
			}
			buf := &testroot.Buffer{} // written by the exporter's goroutines too
			e, err := New(t.Context(), Options{Logger: slog.New(slog.NewTextHandler(buf, nil))})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Shutdown(shutdownCtx(t, 20*time.Second)); err != nil {
				t.Fatal(err)
			}
			out := buf.String()
			if !strings.Contains(out, "logs=false traces=true") {
				t.Fatalf("no start-up line with logs=false traces=true:\n%s", out)
			}
			if got := strings.Contains(out, "set OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_LOGS_EXPORTER"); got != tc.hint {
				t.Errorf("hint logged %v, want %v:\n%s", got, tc.hint, out)
			}
		})
	}
}

// TestUnknownExporterIsAnError: an exporter name or OTLP protocol that
// is not supported stops New with an error that names the variable and
// the value.
func TestUnknownExporterIsAnError(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"OTEL_LOGS_EXPORTER": "carrier-pigeon"}, `OTEL_LOGS_EXPORTER="carrier-pigeon"`},
		{map[string]string{"OTEL_LOGS_EXPORTER": "foo"}, `OTEL_LOGS_EXPORTER="foo"`},
		{map[string]string{"OTEL_TRACES_EXPORTER": "jaeger", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, `OTEL_TRACES_EXPORTER="jaeger"`},
		{map[string]string{"OTEL_LOGS_EXPORTER": "otlp,console"}, `OTEL_LOGS_EXPORTER="otlp,console"`},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, `OTEL_EXPORTER_OTLP_PROTOCOL="http/json"`},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"}, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="udp"`},
	} {
		t.Run(tc.want, func(t *testing.T) {
			clearOTelEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := New(t.Context(), Options{Logger: testLogger(t)})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrConfig) {
				t.Fatalf("error %v, want one naming %s", err, tc.want)
			}
		})
	}
	// A protocol that no enabled signal uses is not looked at, and the
	// per-signal variable wins over the general one.
	clearOTelEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	t.Setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_LOGS_EXPORTER", "otlp")
	if _, err := envSignals(); err != nil {
		t.Fatalf("per-signal protocol overridden: %v", err)
	}
}

// PartialSuccess mimics the OTLP exporters' internal error type, which is
// recognised by name.
type PartialSuccess struct {
	ErrorMessage  string
	RejectedItems int64
}

func (p PartialSuccess) Error() string { return "partial success" }

func TestPartialSuccessRecognised(t *testing.T) {
	err := errors.Join(errors.New("other"), fmt.Errorf("wrapped: %w", PartialSuccess{RejectedItems: 7}))
	if n, ok := partialSuccess(err); !ok || n != 7 {
		t.Fatalf("got %d %v, want 7 true", n, ok)
	}
	if _, ok := partialSuccess(errors.New("connection refused")); ok {
		t.Fatal("plain error taken for a partial success")
	}
}

// A partial success says how many records were rejected, not which: the
// events lost are counted as the most they can be (every record delivered
// stands for one at least), exact when nothing is folded.
func TestPartialTally(t *testing.T) {
	for _, tc := range []struct {
		all      tally
		rejected uint64
		ok, lost tally
	}{
		{tally{10, 10}, 3, tally{7, 7}, tally{3, 3}},
		{tally{10, 25}, 3, tally{7, 7}, tally{3, 18}},
		{tally{10, 25}, 0, tally{10, 10}, tally{0, 15}},
		{tally{10, 25}, 99, tally{0, 0}, tally{10, 25}},
	} {
		ok, lost := partialTally(tc.all, tc.rejected)
		if ok != tc.ok || lost != tc.lost {
			t.Errorf("partialTally(%+v, %d) = %+v, %+v; want %+v, %+v", tc.all, tc.rejected, ok, lost, tc.ok, tc.lost)
		}
	}
}

// The count attribute of a record, as the SDK hands it to the exporter,
// is the events it stands for.
func TestRecordEvents(t *testing.T) {
	capture := &captureExporter{}
	lp := sdklog.NewLoggerProvider(sdklog.WithProcessor(sdklog.NewSimpleProcessor(capture)))
	defer lp.Shutdown(context.Background())
	logger := lp.Logger(ScopeName)
	buf := make([]attribute.KeyValue, 0, maxAttrs)
	counts := []int{0, 1, 7}
	for _, c := range counts {
		ev := seqEvent(1)
		ev.Count = c
		var r otellog.Record
		record(&r, ev, time.Now(), buf)
		logger.Emit(context.Background(), r)
	}
	if len(capture.records) != len(counts) {
		t.Fatalf("%d records exported, want %d", len(capture.records), len(counts))
	}
	for i, c := range counts {
		if n, want := recordEvents(&capture.records[i]), uint64(max(c, 1)); n != want {
			t.Errorf("count %d: recordEvents %d, want %d", c, n, want)
		}
	}
}

// captureExporter keeps what it is given (a SimpleProcessor calls it
// synchronously, from Emit).
type captureExporter struct{ records []sdklog.Record }

func (c *captureExporter) Export(_ context.Context, rs []sdklog.Record) error {
	for _, r := range rs {
		c.records = append(c.records, r.Clone())
	}
	return nil
}
func (c *captureExporter) Shutdown(context.Context) error   { return nil }
func (c *captureExporter) ForceFlush(context.Context) error { return nil }

func TestDropsLoggedAtBoundedRate(t *testing.T) {
	var buf bytes.Buffer
	e := &Exporter{log: slog.New(slog.NewTextHandler(&buf, nil)), enabled: true}
	e.dropped.Add(5)
	e.logDrops()
	e.logDrops() // nothing new: no line
	e.dropped.Add(2)
	e.logDrops()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "dropped=5") || !strings.Contains(lines[1], "dropped=2 total=7") {
		t.Fatalf("drop log lines:\n%s", buf.String())
	}
}

// BenchmarkExportRecords sends today's record (deniedEvent, 25
// attributes) and, as dec1, the 15-attribute record the benchmark sent on
// 2026-12-01 (docs/performance.md, scenario f), so that one run compares
// the two.
func BenchmarkExportRecords(b *testing.B) {
	b.Run("now", func(b *testing.B) { benchmarkExport(b, deniedEvent()) })
	b.Run("dec1", func(b *testing.B) {
		ev := deniedEvent()
		ev.Process.LoaderEnv, ev.Process.UserName = 0, ""
		ev.Process.ParentExecutablePath, ev.Process.ParentExecutableName, ev.Process.ParentCommandLine = "", "", ""
		ev.Container.Image, ev.Container.Pod = "", fsmon.Pod{}
		benchmarkExport(b, ev)
	})
}

func benchmarkExport(b *testing.B, ev *fsmon.Event) {
	c := startCollector(b)
	useCollector(b, c, "http/protobuf")
	e, err := New(b.Context(), Options{Logger: testLogger(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		for e.Pending() > e.queueCap/2 {
			time.Sleep(100 * time.Microsecond)
		}
		e.Handle(ev)
	}
	// The clock runs until the collector has acknowledged every record.
	if err := e.Shutdown(shutdownCtx(b, 5*time.Minute)); err != nil {
		b.Fatal(err)
	}
	el := time.Since(start)
	b.StopTimer()
	if d := e.Dropped(); d != 0 {
		b.Fatalf("dropped %d", d)
	}
	b.ReportMetric(float64(b.N)/el.Seconds(), "records/s")
}

// TestShutdownDeadlineCountsTheRest: with the collector gone for good,
// Shutdown returns by its deadline and everything unsent is counted.
func TestShutdownDeadlineCountsTheRest(t *testing.T) {
	c := startCollector(t)
	useCollector(t, c, "http/protobuf")
	t.Setenv("OTEL_BLRP_MAX_QUEUE_SIZE", "1000")
	e, err := New(t.Context(), Options{Logger: testLogger(t), QueueSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	c.stop()
	const n = 3000
	for i := range n {
		e.Handle(foldedEvent(i))
	}
	start := time.Now()
	err = e.Shutdown(shutdownCtx(t, 2*time.Second))
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("Shutdown took %v with a 2s deadline", el)
	}
	if err == nil {
		t.Error("Shutdown reported success with nothing delivered")
	}
	s := e.Stats()
	if want := eventsOf(0, n); e.Dropped() != want || s.Logs == 0 || s.Queue == 0 {
		t.Fatalf("dropped %d (%+v), want all %d events of the %d records, some in the queue and some in the SDK", e.Dropped(), s, want, n)
	}
	e.Handle(foldedEvent(n + 2)) // after Shutdown: counted (3 events), not sent
	if want := eventsOf(0, n) + 3; e.Dropped() != want {
		t.Fatalf("folded event after Shutdown not counted as its 3 events: %d, want %d", e.Dropped(), want)
	}
}

// A timeout event's record carries its answer and reason, at WARN.
func TestTimeoutRecord(t *testing.T) {
	ev := &fsmon.Event{Time: time.Now(), Kind: fsmon.KindTimeout, Op: fsmon.OpOpen, Path: "/etc/shadow",
		Process: fsmon.Process{PID: 42, UserID: -1}, Count: 1, Answer: fsmon.AnswerDeny, Reason: fsmon.ReasonPanic}
	var r otellog.Record
	record(&r, ev, time.Now(), make([]attribute.KeyValue, 0, maxAttrs))
	got := map[string]string{}
	r.WalkAttributes(func(kv attribute.KeyValue) bool {
		got[string(kv.Key)] = kv.Value.Emit()
		return true
	})
	if got["event"] != "timeout" || got["answer"] != "deny" || got["reason"] != "panic" || got["file.path"] != "/etc/shadow" || r.Severity() != otellog.SeverityWarn || r.EventName() != "fsmon.file.timeout" {
		t.Fatalf("record %s severity %v attributes %v", r.EventName(), r.Severity(), got)
	}
}

// A change event's record carries the file's facts after and before
// with the semantic conventions' keys, and says when the process is
// unknown.
func TestFileFactsRecord(t *testing.T) {
	ev := &fsmon.Event{Time: time.Now(), Kind: fsmon.KindChange, Op: fsmon.OpWrite, Path: "/etc/hosts", Count: 1,
		Process: fsmon.Process{UserID: -1}, Reason: fsmon.ReasonWhileDown,
		File:     &fsmon.FileFacts{Size: 7, Mode: 0o600, UID: 0, GID: 0, OwnerName: "root", SHA256: [32]byte{1}, Hash: fsmon.HashComputed},
		Previous: &fsmon.FileFacts{Size: 3, Mode: 0o644, UID: 1000, GID: 100, Hash: fsmon.HashSkippedRate}}
	var r otellog.Record
	record(&r, ev, time.Now(), make([]attribute.KeyValue, 0, maxAttrs))
	got := map[string]attribute.Value{}
	r.WalkAttributes(func(kv attribute.KeyValue) bool {
		got[string(kv.Key)] = kv.Value
		return true
	})
	for k, want := range map[string]string{"file.mode": "0600", "file.owner.id": "0", "file.owner.name": "root",
		"file.hash.sha256": "01" + strings.Repeat("0", 62), "file.previous.mode": "0644", "file.previous.owner.id": "1000",
		"file.previous.group.id": "100", "file.previous.hash.skipped": "rate", "reason": "changed while down"} {
		if v, ok := got[k]; !ok || v.AsString() != want {
			t.Errorf("%s: %v, want %q", k, v, want)
		}
	}
	if got["file.size"].AsInt64() != 7 || got["file.previous.size"].AsInt64() != 3 || !got["process.unknown"].AsBool() {
		t.Errorf("file.size %v, file.previous.size %v, process.unknown %v", got["file.size"], got["file.previous.size"], got["process.unknown"])
	}
	if _, ok := got["file.previous.hash.sha256"]; ok {
		t.Error("a skipped hash is reported")
	}
}

// The logger provider skips the SDK's search for duplicate keys
// (WithAllowKeyDuplication), which is right only while every record's
// keys are distinct: a denied event with every field set and a change
// event with its facts before and after, skipped hash and all.
func TestRecordKeysAreDistinct(t *testing.T) {
	denied := deniedEvent()
	change := &fsmon.Event{Time: when, Kind: fsmon.KindChange, Op: fsmon.OpWrite, Mode: fsmon.ModeMonitor,
		Profile: "host", Filter: "passwd", Path: "/etc/passwd", Count: 2, Reason: fsmon.ReasonDeadline,
		Process:   denied.Process,
		Container: denied.Container,
		File: &fsmon.FileFacts{Size: 10, Mode: 0o644, UID: 1, GID: 2, OwnerName: "a", GroupName: "b",
			Mtime: when, Hash: fsmon.HashComputed},
		Previous: &fsmon.FileFacts{Size: 9, Mode: 0o600, UID: 3, GID: 4, OwnerName: "c", GroupName: "d",
			Mtime: when, Hash: fsmon.HashSkippedRate},
	}
	buf := make([]attribute.KeyValue, 0, maxAttrs)
	for _, ev := range []*fsmon.Event{denied, change} {
		var r otellog.Record
		record(&r, ev, time.Now(), buf)
		seen := map[string]bool{}
		r.WalkAttributes(func(kv attribute.KeyValue) bool {
			k := string(kv.Key)
			if seen[k] {
				t.Errorf("%s event: key %q twice", ev.Kind, k)
			}
			seen[k] = true
			return true
		})
		if len(seen) < 10 {
			t.Errorf("%s event: only %d keys: %v", ev.Kind, len(seen), seen)
		}
	}
}
