package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestChangeFactsAndBaseline, through the binary: a chmod's JSON line
// carries the mode before and after and the hash; --state.dir keeps
// the baseline across a restart, and a write made while the daemon was
// down is reported at its next start, with what the file was and is,
// as made by an unknown process; --hash.max-size=0 turns hashing off.
func TestChangeFactsAndBaseline(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "hosts")
	if err := os.WriteFile(f, []byte("one\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "fsmon.yml")
	writeConfig(t, cfg, fmt.Sprintf("profiles: [{name: e2e, host: true, filters: [{name: hosts, path: %q}]}]\n", dir))
	state := filepath.Join(t.TempDir(), "state")

	d := startDaemon(t, "--config.file="+cfg, "--state.dir="+state)
	waitMetric(t, d, "fsmon_baseline_files", "1") // the comparison at start is done
	if out, err := runCmd(t, "chmod", "600", f); err != nil {
		t.Fatalf("chmod: %v %s", err, out)
	}
	ev := d.event(t, "change attrib", func(m map[string]any) bool {
		return m["event"] == "change" && m["op"] == "attrib" && m["file.path"] == f
	})
	for k, want := range map[string]any{"file.mode": "0600", "file.previous.mode": "0644", "file.size": 4.0, "file.owner.id": "0",
		"file.owner.name": "root", "file.hash.sha256": sha("one\n"), "file.previous.hash.sha256": sha("one\n")} {
		if ev[k] != want {
			t.Errorf("%s: %v, want %v (%v)", k, ev[k], want, ev)
		}
	}
	waitMetric(t, d, `fsmon_changes_total{filter="hosts",op="attrib",profile="e2e"}`, "1")
	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("SIGTERM: want exit 0, got %v", err)
	}

	if err := os.WriteFile(f, []byte("two lines\nnow\n"), 0o600); err != nil { // while the daemon is down
		t.Fatal(err)
	}
	d = startDaemon(t, "--config.file="+cfg, "--state.dir="+state, "--hash.max-size=0")
	ev = d.event(t, "change write while down", func(m map[string]any) bool {
		return m["event"] == "change" && m["op"] == "write" && m["file.path"] == f
	})
	for k, want := range map[string]any{"reason": "changed while down", "process.unknown": true, "file.size": 14.0, "file.previous.size": 4.0,
		"file.previous.hash.sha256": sha("one\n"), "file.hash.skipped": "off"} {
		if ev[k] != want {
			t.Errorf("%s: %v, want %v (%v)", k, ev[k], want, ev)
		}
	}
	if _, ok := ev["process.pid"]; ok {
		t.Errorf("a change made while down names a process: %v", ev)
	}
	if _, err := os.Stat(filepath.Join(state, "watched-files.baseline")); err != nil {
		t.Error(err)
	}
}
