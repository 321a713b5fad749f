package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// otlpValue is an OTLP JSON attribute value.
type otlpValue struct {
	StringValue *string `json:"stringValue"`
	IntValue    *string `json:"intValue"`
}

type otlpKV struct {
	Key   string    `json:"key"`
	Value otlpValue `json:"value"`
}

func attrs(kvs []otlpKV) map[string]string {
	m := map[string]string{}
	for _, kv := range kvs {
		switch {
		case kv.Value.StringValue != nil:
			m[kv.Key] = *kv.Value.StringValue
		case kv.Value.IntValue != nil:
			m[kv.Key] = *kv.Value.IntValue
		}
	}
	return m
}

// TestOTelEndToEnd runs the daemon against the real test collector
// (tools/otelcol) over OTLP/HTTP: a deny arrives as a log record and a
// span, with the attributes and resource of the contract.
func TestOTelEndToEnd(t *testing.T) {
	bin := testroot.EnvPath(t, "OTELCOL_BINARY", "make builds tools/otelcol and sets it")
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := l.Addr().String()
	l.Close()
	logs, traces := filepath.Join(dir, "logs.json"), filepath.Join(dir, "traces.json")
	cfg := filepath.Join(dir, "otelcol.yaml")
	writeConfig(t, cfg, fmt.Sprintf(`receivers:
  otlp:
    protocols:
      http:
        endpoint: %q
exporters:
  file/logs: {path: %q, flush_interval: 100ms}
  file/traces: {path: %q, flush_interval: 100ms}
service:
  telemetry: {metrics: {level: none}, logs: {level: warn}}
  pipelines:
    logs: {receivers: [otlp], exporters: [file/logs]}
    traces: {receivers: [otlp], exporters: [file/traces]}
`, httpAddr, logs, traces))
	col := exec.Command(bin, "--config", cfg)
	var colOut testroot.Buffer
	col.Stdout, col.Stderr = &colOut, &colOut
	if err := col.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { col.Process.Signal(syscall.SIGTERM); col.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", httpAddr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector not listening: %s", colOut.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	secret := secretFile(t)
	d := startDaemonEnv(t, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + httpAddr,
		"OTEL_TRACES_EXPORTER=otlp",
		"OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=e2e",
	}, "--config.file="+protectConfig(t, secret))
	mustBeDenied(t, secret, "protect mode")
	d.event(t, "denied", func(m map[string]any) bool { return m["event"] == "denied" })
	// SIGTERM flushes the exporters.
	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("exit: %v", err)
	}

	var rec map[string]string
	var resAttrs map[string]string
	var sev, eventName string
	var span map[string]any
	deadline = time.Now().Add(10 * time.Second)
	for rec == nil || span == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no denied record (%v) or span (%v) at the collector\n%s", rec != nil, span != nil, colOut.String())
		}
		time.Sleep(100 * time.Millisecond)
		rec, resAttrs, sev, eventName = findRecord(t, logs)
		span = findSpan(t, traces)
	}
	if eventName != "fsmon.file.denied" || sev != "WARN" {
		t.Errorf("eventName %q severity %q", eventName, sev)
	}
	for k, want := range map[string]string{
		"file.path": secret, "event": "denied", "op": "open", "mode": "protect", "profile": "e2e",
		"filter": "secret", "process.executable.path": "/usr/bin/cat", "process.executable.name": "cat",
		"process.command_line": "cat " + secret, "process.user.id": "0", "count": "1",
	} {
		if rec[k] != want {
			t.Errorf("record %s = %q, want %q", k, rec[k], want)
		}
	}
	for _, k := range []string{"process.pid", "process.parent_pid"} {
		if rec[k] == "" || rec[k] == "0" {
			t.Errorf("record lacks %s: %v", k, rec)
		}
	}
	if resAttrs["service.name"] != "fsmon_exporter" || resAttrs["host.name"] == "" || resAttrs["deployment.environment.name"] != "e2e" {
		t.Errorf("resource: %v", resAttrs)
	}
	if status, _ := span["status"].(map[string]any); status == nil || fmt.Sprint(status["code"]) != "2" {
		t.Errorf("span status: %v", span["status"])
	}
}

func findRecord(t *testing.T, path string) (rec, res map[string]string, sev, name string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, "", ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		var doc struct {
			ResourceLogs []struct {
				Resource struct {
					Attributes []otlpKV `json:"attributes"`
				} `json:"resource"`
				ScopeLogs []struct {
					LogRecords []struct {
						SeverityText string   `json:"severityText"`
						EventName    string   `json:"eventName"`
						Attributes   []otlpKV `json:"attributes"`
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
					a := attrs(lr.Attributes)
					if a["event"] == "denied" {
						return a, attrs(rl.Resource.Attributes), lr.SeverityText, lr.EventName
					}
				}
			}
		}
	}
	return nil, nil, "", ""
}

func findSpan(t *testing.T, path string) map[string]any {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		var doc struct {
			ResourceSpans []struct {
				ScopeSpans []struct {
					Spans []map[string]any `json:"spans"`
				} `json:"scopeSpans"`
			} `json:"resourceSpans"`
		}
		if json.Unmarshal([]byte(line), &doc) != nil {
			continue
		}
		for _, rs := range doc.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					if sp["name"] == "fsmon.permission" {
						return sp
					}
				}
			}
		}
	}
	return nil
}
