package main

// The configuration reloads by itself when its file changes on disk, as
// a Kubernetes ConfigMap volume changes it: kubelet writes the new files
// to a new directory, points a new symlink at it and renames that over
// `..data`, while the path the daemon was given never changes.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// configMapDir lays out dir as kubelet lays out a ConfigMap volume with
// one key, config.yml, and returns the path a pod is given.
func configMapDir(t *testing.T, dir, content string) string {
	t.Helper()
	swapConfigMap(t, dir, "..2026_12_02_00_00_00.000000001", content)
	p := filepath.Join(dir, "config.yml")
	if err := os.Symlink("..data/config.yml", p); err != nil {
		t.Fatal(err)
	}
	return p
}

// swapConfigMap does what kubelet does on an update: the new version's
// directory, a `..data_tmp` symlink to it renamed over `..data` (one
// atomic step), then the old version's directory removed.
func swapConfigMap(t *testing.T, dir, version, content string) {
	t.Helper()
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Mkdir(filepath.Join(dir, version), 0o755); err != nil {
		t.Fatal(err)
	}
	writeConfig(t, filepath.Join(dir, version, "config.yml"), content)
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(version, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func behaviorConfig(secret, behavior string) string {
	return fmt.Sprintf(`
profiles:
  - name: e2e
    host: true
    mode: protect
    filters:
      - name: secret
        path: %s
        behavior: %s
        allow: [/usr/bin/head]
`, secret, behavior)
}

// waitMetricChange waits until series differs from was, and returns it.
func waitMetricChange(t *testing.T, d *daemon, series, was string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if got := d.metric(t, series); got != was && got != "" {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still %q after 60s\n%s", series, was, d.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReloadOnConfigMapSwap(t *testing.T) {
	secret := secretFile(t)
	dir := t.TempDir()
	cfg := configMapDir(t, dir, behaviorConfig(secret, "monitor"))
	d := startDaemon(t, "--config.file="+cfg)

	// A monitor filter restricts nobody.
	if out, err := runCmd(t, "cat", secret); err != nil {
		t.Fatalf("cat under a monitor filter: %v %s", err, out)
	}
	const ts = "fsmon_config_last_reload_success_timestamp_seconds"
	start := d.metric(t, ts)

	// The ConfigMap changes the filter to block; no signal is sent.
	swapConfigMap(t, dir, "..2026_12_02_00_01_00.000000002", behaviorConfig(secret, "block"))
	waitMetricChange(t, d, ts, start)
	if got := d.metric(t, "fsmon_config_last_reload_successful"); got != "1" {
		t.Fatalf("fsmon_config_last_reload_successful = %q after a good change", got)
	}
	d.waitLog(t, 1, `msg="configuration file changed on disk; reloading"`, "file="+cfg)
	d.waitLog(t, 1, `msg="configuration reloaded"`)
	mustBeDenied(t, secret, "after the ConfigMap changed the filter to block")
	if out, err := runCmd(t, "head", secret); err != nil {
		t.Fatalf("allowed head after the change: %v %s", err, out)
	}

	// A bad version keeps the block in force and says so in the metric
	// and the log, one line per problem, naming the file and line.
	swapConfigMap(t, dir, "..2026_12_02_00_02_00.000000003", "profiles:\n  - name: e2e\n    mode: protekt\n    filters:\n      - path: relative\n")
	waitMetric(t, d, "fsmon_config_last_reload_successful", "0")
	mustBeDenied(t, secret, "after a bad ConfigMap version")
	d.waitLog(t, 1, "reloading configuration failed; the previous configuration stays in force", "file="+cfg, "line=3 ")
	d.waitLog(t, 1, "reloading configuration failed; the previous configuration stays in force", "file="+cfg, "line=5 ")
	if n := strings.Count(d.stderr.String(), `msg="configuration reloaded"`); n != 1 {
		t.Errorf("%d reloads logged, want the one good one:\n%s", n, d.stderr.String())
	}
}
