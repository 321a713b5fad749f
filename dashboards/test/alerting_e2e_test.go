package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// TestAlertingEndToEnd proves the path from a denied open to a page: the
// real daemon protects a file, the real Prometheus (Debian package) scrapes
// it every second and evaluates alerts/fsmon.rules.yml every second, a
// process is denied, and FsmonAccessDenied fires in Prometheus and arrives
// in the real Alertmanager, routed to the pager receiver, with the deny's
// profile, filter and container. Everything listens on 127.0.0.1.
func TestAlertingEndToEnd(t *testing.T) {
	testroot.Require(t)
	bin := testroot.Binary(t)
	promBin := testroot.RequireCommand(t, "prometheus")
	amBin := testroot.RequireCommand(t, "prometheus-alertmanager")
	catBin := testroot.RequireCommand(t, "cat")

	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	const secretText = "e2e-secret-content\n"
	if err := os.WriteFile(secret, []byte(secretText), 0o644); err != nil {
		t.Fatal(err)
	}

	// Webhook receiver standing in for the pager and the default receiver.
	hooks := newWebhookSink()
	hookSrv := httptest.NewServer(hooks)
	t.Cleanup(hookSrv.Close)

	// The daemon.
	fsmonAddr := testroot.FreeAddr(t)
	fsmonConfig := filepath.Join(dir, "fsmon.yml")
	writeYAML(t, fsmonConfig, map[string]any{
		"important_files": false,
		"profiles": []any{map[string]any{
			"name": "e2e", "host": true, "mode": "protect",
			"filters": []any{map[string]any{
				"name": "secret", "path": secret, "behavior": "block",
				"allow": []string{"/nonexistent"},
			}},
		}},
	})
	daemon := startServer(t, dir, "fsmon_exporter", bin,
		"--config.file="+fsmonConfig,
		"--web.listen-address="+fsmonAddr,
		"--state.dir="+t.TempDir(), // not the machine's own
		"--log.level=debug",
	)
	waitReady(t, daemon, "http://"+fsmonAddr+"/-/ready", 30*time.Second)

	// Alertmanager, from examples/alertmanager.yml with the webhooks
	// pointed at the sink and no grouping delay.
	amAddr := testroot.FreeAddr(t)
	amConfig := filepath.Join(dir, "alertmanager.yml")
	writeYAML(t, amConfig, alertmanagerConfig(t, hookSrv.URL))
	am := startServer(t, dir, "alertmanager", amBin,
		"--config.file="+amConfig,
		"--storage.path="+filepath.Join(dir, "alertmanager-data"),
		"--web.listen-address="+amAddr,
		"--cluster.listen-address=",
	)
	waitReady(t, am, "http://"+amAddr+"/-/ready", 30*time.Second)

	// Prometheus, from examples/prometheus.yml: scrape and evaluate every
	// second, the real rule file, our Alertmanager.
	promAddr := testroot.FreeAddr(t)
	promConfig := filepath.Join(dir, "prometheus.yml")
	writeYAML(t, promConfig, prometheusConfig(t, fsmonAddr, amAddr))
	prom := startServer(t, dir, "prometheus", promBin,
		"--config.file="+promConfig,
		"--storage.tsdb.path="+filepath.Join(dir, "prometheus-data"),
		"--web.listen-address="+promAddr,
	)
	waitReady(t, prom, "http://"+promAddr+"/-/ready", 30*time.Second)
	servers := []*server{daemon, am, prom}

	// Prometheus scrapes the daemon before anything is denied.
	poll(t, time.Now().Add(30*time.Second), servers, "Prometheus scrapes the daemon (up == 1)", func() (bool, string) {
		res, err := promQuery(promAddr, `up{job="fsmon"}`)
		if err != nil {
			return false, err.Error()
		}
		return len(res) == 1 && res[0].Value[1] == "1", fmt.Sprintf("up: %v", res)
	})
	// ...and finds the exporter's own metrics there, not only go_ and
	// process_ ones.
	poll(t, time.Now().Add(30*time.Second), servers, "fsmon_build_info in Prometheus (the daemon's fsmon_ metrics)", func() (bool, string) {
		res, err := promQuery(promAddr, `fsmon_build_info{job="fsmon"}`)
		if err != nil {
			return false, err.Error()
		}
		names, _ := promQuery(promAddr, `count by (__name__) ({job="fsmon"})`)
		return len(res) == 1, fmt.Sprintf("fsmon_build_info: %v; series names scraped: %v", res, metricNames(names))
	})
	if res, err := promQuery(promAddr, `fsmon_access_denied_total{profile="e2e"}`); err == nil {
		t.Logf("before the deny, fsmon_access_denied_total{profile=\"e2e\"} has %d series (0: the alert has to catch a brand-new series)", len(res))
	}
	if alerts, err := promAlerts(promAddr); err == nil {
		for _, a := range alerts {
			if a.Labels["alertname"] == "FsmonAccessDenied" {
				t.Fatalf("FsmonAccessDenied is %s before anything was denied: %v", a.State, a.Labels)
			}
		}
	}

	// A process outside the allow list opens the file: denied.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	out, err := exec.CommandContext(ctx, catBin, secret).CombinedOutput()
	cancel()
	if err == nil {
		t.Fatalf("cat %s succeeded (%q); the daemon should have denied it", secret, out)
	}
	if strings.Contains(string(out), strings.TrimSpace(secretText)) {
		t.Fatalf("cat failed but printed the protected content: %q", out)
	}
	if !strings.Contains(string(out), "not permitted") {
		t.Fatalf("cat failed, but not with EPERM (Operation not permitted): %v: %q", err, out)
	}
	deniedAt := time.Now()
	t.Logf("cat was denied: %q", strings.TrimSpace(string(out)))

	want := map[string]string{
		"alertname": "FsmonAccessDenied",
		"profile":   "e2e",
		"filter":    "secret",
		"container": "host",
		"severity":  "critical",
		"job":       "fsmon",
		"instance":  fsmonAddr,
	}
	deadline := deniedAt.Add(60 * time.Second)

	// Firing in Prometheus.
	poll(t, deadline, servers, "FsmonAccessDenied firing in Prometheus", func() (bool, string) {
		alerts, err := promAlerts(promAddr)
		if err != nil {
			return false, err.Error()
		}
		for _, a := range alerts {
			if a.State == "firing" && hasLabels(a.Labels, want) {
				if d := a.Annotations["description"]; !strings.Contains(d, "secret") || !strings.Contains(d, "e2e") || !strings.Contains(d, "host") {
					t.Errorf("description does not name profile, filter and container: %q", d)
				}
				if u := a.Annotations["runbook_url"]; !strings.HasSuffix(u, "#fsmonaccessdenied") {
					t.Errorf("runbook_url %q", u)
				}
				return true, ""
			}
		}
		denied, _ := promQuery(promAddr, `fsmon_access_denied_total`)
		return false, fmt.Sprintf("alerts: %+v; fsmon_access_denied_total in Prometheus: %v", alerts, denied)
	})
	t.Logf("FsmonAccessDenied firing in Prometheus %s after the deny", time.Since(deniedAt).Round(time.Millisecond))

	// Received by Alertmanager.
	poll(t, deadline, servers, "FsmonAccessDenied in Alertmanager (/api/v2/alerts)", func() (bool, string) {
		alerts, err := amAlerts(amAddr)
		if err != nil {
			return false, err.Error()
		}
		for _, a := range alerts {
			if a.Status.State == "active" && hasLabels(a.Labels, want) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("alerts: %+v", alerts)
	})
	t.Logf("FsmonAccessDenied active in Alertmanager %s after the deny", time.Since(deniedAt).Round(time.Millisecond))

	// Routed to the pager, as examples/alertmanager.yml says for critical.
	poll(t, deadline, servers, "a notification of FsmonAccessDenied to the pager receiver", func() (bool, string) {
		for _, n := range hooks.received() {
			if n.Receiver != "pager" || n.Status != "firing" {
				continue
			}
			for _, a := range n.Alerts {
				if hasLabels(a.Labels, want) {
					return true, ""
				}
			}
		}
		return false, fmt.Sprintf("notifications: %+v", hooks.received())
	})
	t.Logf("FsmonAccessDenied paged %s after the deny", time.Since(deniedAt).Round(time.Millisecond))
}

// prometheusConfig is examples/prometheus.yml with the test's addresses,
// the real rule file and 1s intervals.
func prometheusConfig(t *testing.T, fsmonAddr, amAddr string) map[string]any {
	t.Helper()
	cfg := readYAML(t, repoPath(t, "examples", "prometheus.yml"))
	global := mapAt(t, cfg, "global")
	global["scrape_interval"] = "1s"
	global["evaluation_interval"] = "1s"
	cfg["rule_files"] = []string{repoPath(t, "alerts", "fsmon.rules.yml")}
	ams := listAt(t, mapAt(t, cfg, "alerting"), "alertmanagers")
	if len(ams) != 1 {
		t.Fatalf("examples/prometheus.yml: want one alertmanager, have %d", len(ams))
	}
	setTargets(t, ams[0], amAddr)
	found := false
	for _, sc := range listAt(t, cfg, "scrape_configs") {
		if sc["job_name"] == "fsmon" {
			found = true
			delete(sc, "kubernetes_sd_configs")
			delete(sc, "relabel_configs")
			setTargets(t, sc, fsmonAddr)
		}
	}
	if !found {
		t.Fatal(`examples/prometheus.yml: no scrape job "fsmon"`)
	}
	return cfg
}

// alertmanagerConfig is examples/alertmanager.yml with every webhook
// pointed at the sink and no grouping delay.
func alertmanagerConfig(t *testing.T, hookURL string) map[string]any {
	t.Helper()
	cfg := readYAML(t, repoPath(t, "examples", "alertmanager.yml"))
	var fast func(r map[string]any)
	fast = func(r map[string]any) {
		r["group_wait"] = "0s"
		r["group_interval"] = "1s"
		if _, ok := r["routes"]; ok {
			for _, c := range listAt(t, r, "routes") {
				fast(c)
			}
		}
	}
	fast(mapAt(t, cfg, "route"))
	for _, rcv := range listAt(t, cfg, "receivers") {
		if _, ok := rcv["webhook_configs"]; !ok {
			t.Fatalf("examples/alertmanager.yml: receiver %v has no webhook_configs", rcv["name"])
		}
		for _, wh := range listAt(t, rcv, "webhook_configs") {
			wh["url"] = hookURL + "/" + fmt.Sprint(rcv["name"])
		}
	}
	return cfg
}

func setTargets(t *testing.T, m map[string]any, addr string) {
	t.Helper()
	sc := listAt(t, m, "static_configs")
	if len(sc) != 1 {
		t.Fatalf("want one static_configs entry, have %d", len(sc))
	}
	sc[0]["targets"] = []string{addr}
}

func readYAML(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mapAt(t *testing.T, m map[string]any, key string) map[string]any {
	t.Helper()
	v, ok := m[key].(map[string]any)
	if !ok {
		t.Fatalf("config: %q is not a mapping: %#v", key, m[key])
	}
	return v
}

func listAt(t *testing.T, m map[string]any, key string) []map[string]any {
	t.Helper()
	l, ok := m[key].([]any)
	if !ok {
		t.Fatalf("config: %q is not a list: %#v", key, m[key])
	}
	out := make([]map[string]any, 0, len(l))
	for _, e := range l {
		em, ok := e.(map[string]any)
		if !ok {
			t.Fatalf("config: an entry of %q is not a mapping: %#v", key, e)
		}
		out = append(out, em)
	}
	return out
}

// server is a child process the test started, with its output in files.
type server struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	outPath string
	done    chan struct{}
	err     error // set before done is closed
}

func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// startServer starts name with its stdout and stderr in files under dir,
// and stops it (SIGTERM, then SIGKILL after 10s) when the test ends,
// printing the end of its output if the test failed.
func startServer(t *testing.T, dir, name, bin string, args ...string) *server {
	t.Helper()
	s := &server{
		name:    name,
		outPath: filepath.Join(dir, name+".stdout"),
		logPath: filepath.Join(dir, name+".stderr"),
		done:    make(chan struct{}),
	}
	stdout, err := os.Create(s.outPath)
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := os.Create(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = stdout, stderr
	if err := s.cmd.Start(); err != nil {
		stdout.Close()
		stderr.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		stdout.Close()
		stderr.Close()
		close(s.done)
	}()
	t.Cleanup(func() {
		if !s.exited() {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.done:
			case <-time.After(10 * time.Second):
				t.Errorf("%s did not stop within 10s of SIGTERM; killing it", name)
				_ = s.cmd.Process.Kill()
				select {
				case <-s.done:
				case <-time.After(5 * time.Second):
					t.Errorf("%s (pid %d) did not die after SIGKILL", name, s.cmd.Process.Pid)
				}
			}
		}
		if t.Failed() {
			t.Logf("%s %s: %v\n--- stderr (end) ---\n%s--- stdout (end) ---\n%s",
				name, strings.Join(args, " "), s.err, tail(s.logPath, 4000), tail(s.outPath, 2000))
		}
	})
	return s
}

func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error() + "\n"
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		_, _ = f.Seek(fi.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

var httpClient = &http.Client{Timeout: 3 * time.Second}

func waitReady(t *testing.T, s *server, u string, within time.Duration) {
	t.Helper()
	poll(t, time.Now().Add(within), []*server{s}, s.name+" ready ("+u+")", func() (bool, string) {
		resp, err := httpClient.Get(u)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
}

// poll calls cond every 200ms until it holds, failing the test at the
// deadline or as soon as one of the servers has exited.
func poll(t *testing.T, deadline time.Time, servers []*server, what string, cond func() (bool, string)) {
	t.Helper()
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		for _, s := range servers {
			if s.exited() {
				t.Fatalf("waiting for %s: %s exited: %v (last state: %s)", what, s.name, s.err, last)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within the deadline; last state: %s", what, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func getJSON(u string, v any) error {
	resp, err := httpClient.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, b)
	}
	return json.Unmarshal(b, v)
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func promQuery(addr, q string) ([]promSample, error) {
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Result []promSample `json:"result"`
		} `json:"data"`
	}
	if err := getJSON("http://"+addr+"/api/v1/query?query="+url.QueryEscape(q), &r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, errors.New("query status " + r.Status)
	}
	return r.Data.Result, nil
}

func metricNames(res []promSample) []string {
	var out []string
	for _, r := range res {
		out = append(out, r.Metric["__name__"])
	}
	sort.Strings(out)
	return out
}

type promAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	State       string            `json:"state"`
}

func promAlerts(addr string) ([]promAlert, error) {
	var r struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	err := getJSON("http://"+addr+"/api/v1/alerts", &r)
	return r.Data.Alerts, err
}

type amAlert struct {
	Labels map[string]string `json:"labels"`
	Status struct {
		State string `json:"state"`
	} `json:"status"`
}

func amAlerts(addr string) ([]amAlert, error) {
	var r []amAlert
	err := getJSON("http://"+addr+"/api/v2/alerts?filter="+url.QueryEscape(`alertname="FsmonAccessDenied"`), &r)
	return r, err
}

// webhookSink records Alertmanager webhook notifications.
type webhookSink struct {
	mu   sync.Mutex
	msgs []webhookMsg
}

type webhookMsg struct {
	Receiver string `json:"receiver"`
	Status   string `json:"status"`
	Alerts   []struct {
		Labels map[string]string `json:"labels"`
		Status string            `json:"status"`
	} `json:"alerts"`
}

func newWebhookSink() *webhookSink { return &webhookSink{} }

func (s *webhookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var m webhookMsg
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()
}

func (s *webhookSink) received() []webhookMsg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]webhookMsg(nil), s.msgs...)
}
