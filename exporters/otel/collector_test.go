package otel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// collectorBinary is the test collector the Makefile builds
// (tools/otelcol), by testroot's rule.
func collectorBinary(t testing.TB) string {
	t.Helper()
	return testroot.EnvPath(t, "OTELCOL_BINARY", "make builds tools/otelcol and sets it")
}

// collector is one run of the test collector on loopback, writing what it
// receives as JSON lines, logs and traces to files of their own.
type collector struct {
	t          testing.TB
	bin, dir   string
	grpcAddr   string
	httpAddr   string
	cmd        *exec.Cmd
	exited     chan struct{}
	stderr     *bytes.Buffer
	logFiles   []string
	traceFiles []string
	runs       int
}

// freePort asks the kernel for a free loopback port.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startCollector(t testing.TB) *collector {
	t.Helper()
	c := &collector{
		t:        t,
		bin:      collectorBinary(t),
		dir:      t.TempDir(),
		grpcAddr: freePort(t),
		httpAddr: freePort(t),
	}
	t.Cleanup(c.kill)
	c.start()
	return c
}

// start runs the collector, each run writing to new files: the file
// exporter's handling of an existing file is not what is under test.
func (c *collector) start() {
	c.t.Helper()
	c.runs++
	logs := filepath.Join(c.dir, fmt.Sprintf("logs-%d.json", c.runs))
	traces := filepath.Join(c.dir, fmt.Sprintf("traces-%d.json", c.runs))
	c.logFiles = append(c.logFiles, logs)
	c.traceFiles = append(c.traceFiles, traces)
	cfg := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %q
      http:
        endpoint: %q
exporters:
  file/logs:
    path: %q
    flush_interval: 100ms
  file/traces:
    path: %q
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [file/logs]
    traces:
      receivers: [otlp]
      exporters: [file/traces]
`, c.grpcAddr, c.httpAddr, logs, traces)
	cfgPath := filepath.Join(c.dir, fmt.Sprintf("config-%d.yaml", c.runs))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		c.t.Fatal(err)
	}
	c.stderr = &bytes.Buffer{}
	c.cmd = exec.Command(c.bin, "--config", cfgPath)
	c.cmd.Stdout = c.stderr
	c.cmd.Stderr = c.stderr
	if err := c.cmd.Start(); err != nil {
		c.t.Fatalf("start collector: %v", err)
	}
	c.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(c.cmd, c.exited)
	// Ready when both receivers accept connections.
	deadline := time.Now().Add(30 * time.Second)
	for _, addr := range []string{c.grpcAddr, c.httpAddr} {
		for {
			conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case <-c.exited:
				c.t.Fatalf("collector exited: %s", c.stderr)
			default:
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("collector not listening on %s after 30s: %s", addr, c.stderr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// stop ends the collector gracefully (SIGTERM): it answers the requests
// it has taken and flushes its files, as a restarted collector would.
func (c *collector) stop() {
	c.t.Helper()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
		c.t.Errorf("collector ignored SIGTERM for 20s")
	}
	c.cmd = nil
}

func (c *collector) kill() {
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Kill()
	<-c.exited
	c.cmd = nil
}

// The JSON the file exporter writes: one OTLP export request a line, in
// the protobuf JSON mapping (64-bit integers as strings).
type anyValue struct {
	StringValue *string `json:"stringValue"`
	IntValue    *string `json:"intValue"`
}

func (v anyValue) String() string {
	switch {
	case v.StringValue != nil:
		return *v.StringValue
	case v.IntValue != nil:
		return *v.IntValue
	}
	return ""
}

type keyValue struct {
	Key   string   `json:"key"`
	Value anyValue `json:"value"`
}

type attrs []keyValue

func (a attrs) get(k string) (string, bool) {
	for _, kv := range a {
		if kv.Key == k {
			return kv.Value.String(), true
		}
	}
	return "", false
}

type resourceJSON struct {
	Attributes attrs `json:"attributes"`
}

type logRecordJSON struct {
	TimeUnixNano         string   `json:"timeUnixNano"`
	ObservedTimeUnixNano string   `json:"observedTimeUnixNano"`
	SeverityNumber       int      `json:"severityNumber"`
	SeverityText         string   `json:"severityText"`
	EventName            string   `json:"eventName"`
	Body                 anyValue `json:"body"`
	Attributes           attrs    `json:"attributes"`
	resource             attrs
	scope                string
}

type spanJSON struct {
	Name              string `json:"name"`
	StartTimeUnixNano string `json:"startTimeUnixNano"`
	EndTimeUnixNano   string `json:"endTimeUnixNano"`
	Status            struct {
		Code int `json:"code"`
	} `json:"status"`
	Attributes attrs `json:"attributes"`
	resource   attrs
}

type logsLine struct {
	ResourceLogs []struct {
		Resource  resourceJSON `json:"resource"`
		ScopeLogs []struct {
			Scope struct {
				Name string `json:"name"`
			} `json:"scope"`
			LogRecords []logRecordJSON `json:"logRecords"`
		} `json:"scopeLogs"`
	} `json:"resourceLogs"`
}

type tracesLine struct {
	ResourceSpans []struct {
		Resource   resourceJSON `json:"resource"`
		ScopeSpans []struct {
			Spans []spanJSON `json:"spans"`
		} `json:"scopeSpans"`
	} `json:"resourceSpans"`
}

// eachLine calls f with every line of the files that exist so far.
func eachLine(t testing.TB, files []string, f func([]byte)) {
	t.Helper()
	for _, p := range files {
		fh, err := os.Open(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 0, 1<<20), 256<<20)
		for sc.Scan() {
			if len(bytes.TrimSpace(sc.Bytes())) > 0 {
				f(sc.Bytes())
			}
		}
		err = sc.Err()
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
}

func (c *collector) logRecords() []logRecordJSON {
	c.t.Helper()
	var out []logRecordJSON
	eachLine(c.t, c.logFiles, func(b []byte) {
		var l logsLine
		if err := json.Unmarshal(b, &l); err != nil {
			// The file exporter may be mid-line; the next read sees it.
			return
		}
		for _, rl := range l.ResourceLogs {
			for _, sl := range rl.ScopeLogs {
				for _, r := range sl.LogRecords {
					r.resource = rl.Resource.Attributes
					r.scope = sl.Scope.Name
					out = append(out, r)
				}
			}
		}
	})
	return out
}

func (c *collector) spans() []spanJSON {
	c.t.Helper()
	var out []spanJSON
	eachLine(c.t, c.traceFiles, func(b []byte) {
		var l tracesLine
		if err := json.Unmarshal(b, &l); err != nil {
			return
		}
		for _, rs := range l.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					s.resource = rs.Resource.Attributes
					out = append(out, s)
				}
			}
		}
	})
	return out
}

// countReceived is the sum of the count attributes of the records
// received, i.e. the events they stand for.
func countReceived(recs []logRecordJSON) uint64 {
	var n uint64
	for _, r := range recs {
		v, _ := r.Attributes.get("count")
		c, _ := strconv.ParseUint(v, 10, 64)
		n += c
	}
	return n
}

// waitFor polls cond until it holds or the bounded wait runs out.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func shutdownCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
