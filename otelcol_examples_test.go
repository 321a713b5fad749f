package main

// The OpenTelemetry examples: the OTEL_* lines of README.md and
// docs/opentelemetry.md do what they say against the test collector, the
// Collector configurations of examples/otelcol validate with it, and
// agent and gateway carry a deny from the daemon to a backend.

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

const otelcolHint = "make builds tools/otelcol and sets it"

// startCollector runs the test collector with config, in env, and waits
// until it listens on every one of addrs.
func startCollector(t *testing.T, bin, config string, env []string, addrs ...string) *testroot.Buffer {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "otelcol.yaml")
	writeConfig(t, cfg, config)
	col := exec.Command(bin, "--config", cfg)
	col.Env = append(os.Environ(), env...)
	out := &testroot.Buffer{}
	col.Stdout, col.Stderr = out, out
	if err := col.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		col.Process.Signal(syscall.SIGTERM)
		col.Wait()
		if t.Failed() {
			t.Logf("collector %s:\n%s", cfg, out.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for _, a := range addrs {
		for {
			c, err := net.DialTimeout("tcp", a, 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("collector not listening on %s within 60s:\n%s", a, out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return out
}

// sink is a collector that writes what it receives over OTLP (gRPC and
// HTTP) to files, standing for a backend.
type sink struct {
	grpc, http    string
	logs, traces  string
	collectorLogs *testroot.Buffer
}

func startSink(t *testing.T, bin string) *sink {
	t.Helper()
	dir := t.TempDir()
	s := &sink{grpc: testroot.FreeAddr(t), http: testroot.FreeAddr(t),
		logs: filepath.Join(dir, "logs.json"), traces: filepath.Join(dir, "traces.json")}
	s.collectorLogs = startCollector(t, bin, `receivers:
  otlp:
    protocols:
      grpc: {endpoint: "`+s.grpc+`"}
      http: {endpoint: "`+s.http+`"}
exporters:
  file/logs: {path: "`+s.logs+`", flush_interval: 100ms}
  file/traces: {path: "`+s.traces+`", flush_interval: 100ms}
service:
  telemetry: {metrics: {level: none}, logs: {level: warn}}
  pipelines:
    logs: {receivers: [otlp], exporters: [file/logs]}
    traces: {receivers: [otlp], exporters: [file/traces]}
`, nil, s.grpc, s.http)
	return s
}

// record waits for the log record of the deny of file, and returns its
// resource attributes.
func (s *sink) record(t *testing.T, file string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if res := findResourceOf(s.logs, file); res != nil {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log record of the deny of %s at the backend within 60s", file)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// span waits for the span of the deny of file.
func (s *sink) span(t *testing.T, file string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !hasSpanOf(s.traces, file) {
		if time.Now().After(deadline) {
			t.Fatalf("no span of the deny of %s at the backend within 60s", file)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func findResourceOf(path, file string) map[string]string {
	b, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(b), "\n") {
		var doc struct {
			ResourceLogs []struct {
				Resource struct {
					Attributes []otlpKV `json:"attributes"`
				} `json:"resource"`
				ScopeLogs []struct {
					LogRecords []struct {
						Attributes []otlpKV `json:"attributes"`
					} `json:"logRecords"`
				} `json:"scopeLogs"`
			} `json:"resourceLogs"`
		}
		if json.Unmarshal([]byte(line), &doc) != nil {
			continue
		}
		for _, rl := range doc.ResourceLogs {
			for _, sl := range rl.ScopeLogs {
				for _, lr := range sl.LogRecords {
					if a := attrs(lr.Attributes); a["event"] == "denied" && a["file.path"] == file {
						return attrs(rl.Resource.Attributes)
					}
				}
			}
		}
	}
	return nil
}

func hasSpanOf(path, file string) bool {
	b, _ := os.ReadFile(path)
	for _, line := range strings.Split(string(b), "\n") {
		var doc struct {
			ResourceSpans []struct {
				ScopeSpans []struct {
					Spans []struct {
						Name       string   `json:"name"`
						Attributes []otlpKV `json:"attributes"`
					} `json:"spans"`
				} `json:"scopeSpans"`
			} `json:"resourceSpans"`
		}
		if json.Unmarshal([]byte(line), &doc) != nil {
			continue
		}
		for _, rs := range doc.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					if sp.Name == "fsmon.permission" && attrs(sp.Attributes)["file.path"] == file {
						return true
					}
				}
			}
		}
	}
	return false
}

// denyOnce runs the daemon with env, makes one denied open and stops the
// daemon (SIGTERM flushes the exporters); it returns the denied file and
// the daemon's log.
func denyOnce(t *testing.T, env []string) (file, log string) {
	t.Helper()
	secret := secretFile(t)
	d := startDaemonEnv(t, env, "--config.file="+protectConfig(t, secret))
	mustBeDenied(t, secret, "protect mode")
	d.event(t, "denied", func(m map[string]any) bool { return m["event"] == "denied" && m["file.path"] == secret })
	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("exit: %v\n%s", err, d.stderr.String())
	}
	return secret, d.stderr.String()
}

// TestOTelDocExamples: every OTEL_* example of README.md and
// docs/opentelemetry.md, as written there but for the collector's
// address, sends what its comment says: log records, and spans where it
// says so.
func TestOTelDocExamples(t *testing.T) {
	bin := testroot.EnvPath(t, "OTELCOL_BINARY", otelcolHint)
	s := startSink(t, bin)
	for i, ex := range []struct {
		doc, line string
		spans     bool
	}{
		{"README.md", "OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 ./fsmon_exporter", false},
		{"README.md", "OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317 OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_TRACES_EXPORTER=otlp ./fsmon_exporter", true},
		{"docs/opentelemetry.md", "OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 fsmon_exporter", false},
		{"docs/opentelemetry.md", "OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317 OTEL_EXPORTER_OTLP_PROTOCOL=grpc fsmon_exporter", false},
		{"docs/opentelemetry.md", "OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 OTEL_TRACES_EXPORTER=otlp fsmon_exporter", true},
	} {
		// Named by position: a name with "=" would put one in the temporary
		// paths, which cat then quotes in its error.
		t.Run(fmt.Sprintf("%s-%d", filepath.Base(ex.doc), i), func(t *testing.T) {
			if !strings.Contains(readFile(t, ex.doc), ex.line) {
				t.Fatalf("%s no longer has the example %q: change this test with it", ex.doc, ex.line)
			}
			var env []string
			for _, w := range strings.Fields(ex.line) {
				k, v, ok := strings.Cut(w, "=")
				if !ok {
					break // the command
				}
				v = strings.NewReplacer("collector:4318", s.http, "collector:4317", s.grpc).Replace(v)
				env = append(env, k+"="+v)
			}
			file, log := denyOnce(t, env)
			// What the daemon says it sends, first: the example's comment.
			if want := fmt.Sprintf("OpenTelemetry export enabled\" component=otel logs=true traces=%v ", ex.spans); !strings.Contains(log, want) {
				t.Fatalf("no %q in the daemon's log:\n%s", want, log)
			}
			s.record(t, file)
			if ex.spans {
				s.span(t, file)
			}
		})
	}
}

// TestOTelUnknownExporterNamed: a wrong exporter name stops the daemon
// (exit 1) with one log record, in the chosen
// format, whose error names the variable and the value.
func TestOTelUnknownExporterNamed(t *testing.T) {
	bin := testroot.Binary(t)
	const want = `OTEL_LOGS_EXPORTER="foo": unknown exporter; want one of otlp, console, none`
	for _, format := range []string{"logfmt", "json"} {
		t.Run(format, func(t *testing.T) {
			c := exec.Command(bin, "--web.listen-address="+testroot.FreeAddr(t), "--state.dir="+t.TempDir(), "--log.format="+format)
			c.Env = append(os.Environ(), "OTEL_LOGS_EXPORTER=foo")
			out, err := c.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("want exit 1, got %v\n%s", err, out)
			}
			var found bool
			for _, line := range strings.Split(string(out), "\n") {
				var msg string
				if format == "json" {
					var rec struct{ Level, Err string }
					if json.Unmarshal([]byte(line), &rec) != nil || rec.Level != "ERROR" {
						continue
					}
					msg = rec.Err
				} else {
					if !strings.Contains(line, "level=ERROR") {
						continue
					}
					// logfmt quotes the error: unquote what follows err=.
					_, q, ok := strings.Cut(line, " err=")
					if !ok {
						continue
					}
					if msg, err = strconv.Unquote(q); err != nil {
						t.Fatalf("err= not one quoted value: %v\n%s", err, line)
					}
				}
				found = found || strings.Contains(msg, want)
			}
			if !found {
				t.Fatalf("no ERROR record with %q:\n%s", want, out)
			}
		})
	}
}

// TestOTelCollectorExamplesInDocs: docs/opentelemetry.md shows the
// agent and gateway configurations of examples/otelcol as they are.
func TestOTelCollectorExamplesInDocs(t *testing.T) {
	doc := readFile(t, "docs/opentelemetry.md")
	for _, f := range []string{"agent.yaml", "gateway.yaml"} {
		// docs/opentelemetry.md shows each file but its header comment.
		text := readFile(t, filepath.Join("examples", "otelcol", f))
		lines := strings.Split(text, "\n")
		for len(lines) > 0 && strings.HasPrefix(lines[0], "#") {
			lines = lines[1:]
		}
		if body := strings.Trim(strings.Join(lines, "\n"), "\n") + "\n"; !strings.Contains(doc, "```yaml\n"+body+"```") {
			t.Errorf("docs/opentelemetry.md does not show examples/otelcol/%s as it is", f)
		}
	}
}

// TestOTelCollectorExamplesValidate: the configurations of
// examples/otelcol pass `otelcol validate` with the test collector, which
// has every component they use (validate builds the pipelines, so a wrong
// key or a missing component fails).
func TestOTelCollectorExamplesValidate(t *testing.T) {
	bin := testroot.EnvPath(t, "OTELCOL_BINARY", otelcolHint)
	for _, f := range []string{"agent.yaml", "gateway.yaml"} {
		c := exec.Command(bin, "validate", "--config", filepath.Join("examples", "otelcol", f))
		c.Env = append(os.Environ(), "NODE_NAME=node-1")
		if out, err := c.CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
	// The docs say the agent needs NODE_NAME: without it, it does not
	// start (rather than label every record with an empty node).
	c := exec.Command(bin, "validate", "--config", filepath.Join("examples", "otelcol", "agent.yaml"))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NODE_NAME=") {
			c.Env = append(c.Env, kv)
		}
	}
	if out, err := c.CombinedOutput(); err == nil {
		t.Errorf("agent.yaml validates without NODE_NAME:\n%s", out)
	}
}

// TestOTelCollectorExamplesChain: the daemon sends over gRPC to the
// agent of examples/otelcol, which forwards to the gateway, which sends
// to a backend (the sink): the deny arrives as a log record and a span,
// with the node the agent was told (NODE_NAME) as k8s.node.name. The
// configurations run as they are, but for their listen addresses (free
// ports here instead of 4317 and 4318), their own metrics (off, as two
// collectors run on one machine) and the environment they read.
func TestOTelCollectorExamplesChain(t *testing.T) {
	bin := testroot.EnvPath(t, "OTELCOL_BINARY", otelcolHint)
	s := startSink(t, bin)
	listen := func(file string) (config, grpc string) {
		grpc, http := testroot.FreeAddr(t), testroot.FreeAddr(t)
		c := readFile(t, filepath.Join("examples", "otelcol", file))
		for old, new := range map[string]string{"0.0.0.0:4317": grpc, "0.0.0.0:4318": http} {
			if strings.Count(c, old) != 1 {
				t.Fatalf("%s: %q not once in its receiver", file, old)
			}
			c = strings.Replace(c, old, new, 1)
		}
		// Two collectors on one machine: their own metrics (on
		// localhost:8888 by default) off.
		if strings.Count(c, "\nservice:\n") != 1 {
			t.Fatalf("%s: no service section", file)
		}
		c = strings.Replace(c, "\nservice:\n", "\nservice:\n  telemetry: {metrics: {level: none}}\n", 1)
		return c, grpc
	}
	gwConfig, gw := listen("gateway.yaml")
	startCollector(t, bin, gwConfig, []string{
		"LOGS_ENDPOINT=http://" + s.http,
		"TRACES_ENDPOINT=" + s.grpc,
		"TRACES_INSECURE=true",
	}, gw)
	agentConfig, agent := listen("agent.yaml")
	startCollector(t, bin, agentConfig, []string{
		"NODE_NAME=node-e2e",
		"GATEWAY_ENDPOINT=" + gw,
		"GATEWAY_INSECURE=true",
	}, agent)

	env := []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + agent,
		"OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_TRACES_EXPORTER=otlp",
	}
	file, _ := denyOnce(t, env)
	res := s.record(t, file)
	if res["k8s.node.name"] != "node-e2e" || res["service.name"] != "fsmon_exporter" {
		t.Errorf("resource at the backend: %v, want k8s.node.name=node-e2e from the agent", res)
	}
	s.span(t, file)

	// The daemon's own k8s.node.name (OTEL_RESOURCE_ATTRIBUTES, as the
	// docs set it) is kept: the agent only inserts the node where the
	// sender did not say.
	file, _ = denyOnce(t, append(env, "OTEL_RESOURCE_ATTRIBUTES=k8s.node.name=node-from-daemon"))
	if res := s.record(t, file); res["k8s.node.name"] != "node-from-daemon" {
		t.Errorf("resource at the backend: %v, want the daemon's k8s.node.name=node-from-daemon", res)
	}
}
