package collector

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// lookup is the value of the series of name with exactly labels, and
// whether it is exported at all.
func lookup(t *testing.T, text []byte, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("parsing the scrape: %v", err)
	}
	for _, m := range mfs[name].GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		if fmt.Sprint(got) == fmt.Sprint(labels) {
			return m.GetCounter().GetValue(), true
		}
	}
	return 0, false
}

func hostFilter(profile, filter string) map[string]string {
	return map[string]string{"profile": profile, "filter": filter, "container": "host", "namespace": ""}
}

func eventSeries(event, op, profile string) map[string]string {
	return map[string]string{"event": event, "op": op, "profile": profile}
}

// TestE2EKnownSeriesAtZero: the series the configuration makes known are
// exported at 0 by the first scrape, before any event; a reload (here a
// change of the file on disk) drops the series of a removed profile and
// the 0 series no longer known, adds the new ones, and keeps what has
// counted.
func TestE2EKnownSeriesAtZero(t *testing.T) {
	testroot.Require(t)
	bin := testroot.Binary(t)
	dir := t.TempDir()
	secret := writeFile(t, dir, "secret", "s3cret\n")
	key := writeFile(t, dir, "key", "k\n")
	logf := writeFile(t, dir, "log", "l\n")
	config := func(guardMode string, withWatch bool) string {
		s := fmt.Sprintf(`profiles:
  - name: guard
    host: true
    mode: %s
    filters:
      - name: secret
        path: %q
        behavior: block
        allow: [/nonexistent]
  - name: pods
    containers: {namespace: 'prod-*'}
    mode: protect
    filters:
      - name: token
        path: /var/run/secrets/token
        behavior: block
        allow: [/nonexistent]
`, guardMode, secret)
		if withWatch {
			s += fmt.Sprintf(`  - name: watch
    host: true
    mode: monitor
    filters:
      - name: key
        path: %q
        behavior: block
        allow: [/nonexistent]
      - name: log
        path: %q
`, key, logf)
		}
		return s
	}
	cfg := writeFile(t, dir, "fsmon.yml", config("protect", true))
	d := startDaemon(t, bin, "--config.file="+cfg)
	base := "http://" + d.addr
	client := &http.Client{Timeout: 5 * time.Second}
	d.waitReady(t, client, base+"/-/ready", nil)

	text := scrape(t, client, base+"/metrics", nil)
	for _, s := range []struct {
		name   string
		labels map[string]string
	}{
		{"fsmon_access_denied_total", hostFilter("guard", "secret")},
		{"fsmon_access_violations_total", hostFilter("watch", "key")},
		{"fsmon_events_total", eventSeries("denied", "open", "guard")},
		{"fsmon_events_total", eventSeries("denied", "open", "pods")},
		{"fsmon_events_total", eventSeries("violation", "open", "watch")},
		{"fsmon_events_total", eventSeries("change", "write", "watch")},
		{"fsmon_events_total", eventSeries("change", "delete", "guard")},
	} {
		if v, ok := lookup(t, text, s.name, s.labels); !ok || v != 0 {
			t.Errorf("before any event: %s%v = %v (exported: %v), want 0", s.name, s.labels, v, ok)
		}
	}
	// Not known ahead: the host has no denied count of a container
	// profile, a monitor filter none at all, and protect mode no
	// violations.
	for _, s := range []struct {
		name   string
		labels map[string]string
	}{
		{"fsmon_access_denied_total", hostFilter("pods", "token")},
		{"fsmon_access_violations_total", hostFilter("watch", "log")},
		{"fsmon_access_violations_total", hostFilter("guard", "secret")},
		{"fsmon_events_total", eventSeries("violation", "open", "guard")},
	} {
		if _, ok := lookup(t, text, s.name, s.labels); ok {
			t.Errorf("before any event: %s%v exported, want absent", s.name, s.labels)
		}
	}

	// One deny counted, then the configuration changes: watch is
	// removed, guard goes to monitor mode.
	mustBeDenied(t, secret)
	deadline := time.Now().Add(30 * time.Second)
	for v, _ := lookup(t, text, "fsmon_access_denied_total", hostFilter("guard", "secret")); v != 1; v, _ = lookup(t, text, "fsmon_access_denied_total", hostFilter("guard", "secret")) {
		if time.Now().After(deadline) {
			t.Fatalf("the deny not counted within 30s")
		}
		time.Sleep(50 * time.Millisecond)
		text = scrape(t, client, base+"/metrics", nil)
	}
	tmp := filepath.Join(dir, "fsmon.yml.new")
	if err := os.WriteFile(tmp, []byte(config("monitor", false)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, cfg); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(60 * time.Second)
	for {
		text = scrape(t, client, base+"/metrics", nil)
		if _, ok := lookup(t, text, "fsmon_access_violations_total", hostFilter("guard", "secret")); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the changed configuration's series not exported within 60s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, s := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"fsmon_access_violations_total", hostFilter("guard", "secret"), 0},
		{"fsmon_events_total", eventSeries("violation", "open", "guard"), 0},
		// Counted: kept, although monitor mode denies nothing.
		{"fsmon_access_denied_total", hostFilter("guard", "secret"), 1},
		{"fsmon_events_total", eventSeries("denied", "open", "guard"), 1},
		{"fsmon_events_total", eventSeries("denied", "open", "pods"), 0},
	} {
		if v, ok := lookup(t, text, s.name, s.labels); !ok || v != s.want {
			t.Errorf("after the reload: %s%v = %v (exported: %v), want %v", s.name, s.labels, v, ok, s.want)
		}
	}
	for _, s := range []struct {
		name   string
		labels map[string]string
	}{
		{"fsmon_access_violations_total", hostFilter("watch", "key")},
		{"fsmon_events_total", eventSeries("violation", "open", "watch")},
		{"fsmon_events_total", eventSeries("change", "write", "watch")},
	} {
		if _, ok := lookup(t, text, s.name, s.labels); ok {
			t.Errorf("after the reload: %s%v of the removed profile still exported", s.name, s.labels)
		}
	}
}
