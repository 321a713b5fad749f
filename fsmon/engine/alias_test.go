package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// TestAliasReportedUnderItsRealName: a filter written with a symlinked
// directory (/bin on a merged-/usr system, which leads to /usr/bin)
// reports its files under the name the file system gives them, changes
// and opens alike.
func TestAliasReportedUnderItsRealName(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "usr", "bin")
	if err := os.MkdirAll(real, 0o755); err != nil {
		t.Fatal(err)
	}
	alias := filepath.Join(dir, "bin")
	if err := os.Symlink("usr/bin", alias); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(real, "tool"), "v1\n")
	writeFile(t, filepath.Join(real, "key"), "k\n")
	h := start(t, fmt.Sprintf(`
profiles:
  - name: t
    host: true
    mode: monitor
    filters:
      - name: bins
        path: %s
        regex: tool
      - name: key
        path: %s/key
        behavior: block
        allow: [/usr/bin/head]
`, alias, alias))
	mustAllow(t, cmd(t, "sh", "-c", "echo v2 > "+filepath.Join(alias, "tool")))
	ev := h.rec.waitFor(t, "change of tool", func(ev *fsmon.Event) bool { return ev.Kind == fsmon.KindChange && ev.Filter == "bins" })
	if want := filepath.Join(real, "tool"); ev.Path != want {
		t.Errorf("change reported at %s, want %s (the file system's name, not the filter's alias)", ev.Path, want)
	}
	mustAllow(t, cmd(t, "cat", filepath.Join(alias, "key")))
	ev = h.rec.waitFor(t, "violation of key", func(ev *fsmon.Event) bool { return ev.Kind == fsmon.KindViolation && ev.Filter == "key" })
	if want := filepath.Join(real, "key"); ev.Path != want {
		t.Errorf("violation reported at %s, want %s", ev.Path, want)
	}
}
