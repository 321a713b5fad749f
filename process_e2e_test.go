package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// TestDaemonNamesWhoChanged: the daemon names the writer of a change on
// stdout with every process key, its user and its parent, from the
// process table the log says is on, and exports the table's figures;
// --process.table=off says so in the log and exports none.
func TestDaemonNamesWhoChanged(t *testing.T) {
	testroot.Require(t)
	dir := t.TempDir()
	f := filepath.Join(dir, "watched")
	writeConfig(t, f, "a\n")
	cfg := filepath.Join(dir, "config.yml")
	writeConfig(t, cfg, "profiles:\n  - name: who\n    host: true\n    filters:\n      - path: "+f+"\n")
	d := startDaemon(t, "--config.file="+cfg, "--containers.scan-interval=0")
	d.waitLog(t, 1, "process table on")
	if _, err := runCmd(t, "sh", "-c", "echo x >> "+f); err != nil {
		t.Fatal(err)
	}
	ev := d.event(t, "change write", func(m map[string]any) bool {
		return m["event"] == "change" && m["op"] == "write" && m["file.path"] == f
	})
	self, _ := os.Executable()
	for k, want := range map[string]any{
		"process.executable.name":        "sh",
		"process.command_line":           "sh -c echo x >> " + f,
		"process.user.id":                float64(0),
		"process.user.name":              "root",
		"process.parent_pid":             float64(os.Getpid()),
		"process.parent.executable.path": self,
	} {
		if ev[k] != want {
			t.Errorf("%s = %v, want %v (%v)", k, ev[k], want, ev)
		}
	}
	for _, k := range []string{"process.executable.path", "process.parent.executable.name", "process.parent.command_line"} {
		if s, _ := ev[k].(string); s == "" {
			t.Errorf("no %s: %v", k, ev)
		}
	}
	if n, err := strconv.Atoi(d.metric(t, "fsmon_process_table_records")); err != nil || n == 0 {
		t.Errorf("fsmon_process_table_records %q", d.metric(t, "fsmon_process_table_records"))
	}

	off := startDaemon(t, "--config.file="+cfg, "--containers.scan-interval=0", "--process.table=off")
	off.waitLog(t, 1, "process table off")
	if v := off.metric(t, "fsmon_process_table_records"); v != "" {
		t.Errorf("fsmon_process_table_records %q with the table off", v)
	}
}
