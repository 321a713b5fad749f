package engine

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// TestContainerFillingItsBudgetLeavesTheHostProtected: a container whose
// recursive filters cover more directories than its budget has the rest
// of its tree left unmarked, counted and logged, while a directory the
// host makes afterwards is followed (a monitor-only tree, which the
// engine's object limit cuts first): the
// container cannot use up the objects the host needs. Without a budget
// (0), the objects the containers hold do not count against the host's
// room either.
func TestContainerFillingItsBudgetLeavesTheHostProtected(t *testing.T) {
	for _, tc := range []struct {
		name   string
		budget int
		cut    bool
	}{
		{"budget", 20, true},
		{"no budget", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testroot.Require(t)
			hostDir := t.TempDir()
			root := busyboxRoot(t)
			for i := range 100 {
				if err := os.MkdirAll(filepath.Join(root, "data", fmt.Sprintf("d%03d", i)), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			h := start(t, fmt.Sprintf(`
profiles:
  - name: host
    host: true
    filters:
      - name: tree
        path: %s
        recursive: true
  - name: fill
    containers: {name: '%s-fill-*'}
    mode: protect
    filters:
      - name: data
        path: /data
        recursive: true
        behavior: block
        allow: [head]
`, hostDir, testRun), func(o *Options) {
				o.ContainerScan = scanForTests
				o.MaxObjects = 60
				o.GroupBudget = tc.budget
			})
			c := startContainer(t, root, "fill-1", cgroupV2Docker)
			waitGroup(t, h, c, true)
			st := h.Snapshot()
			if cut := st.BudgetUnmarked > 0; cut != tc.cut {
				t.Errorf("objects cut by the budget: %d, want cut %v", st.BudgetUnmarked, tc.cut)
			}
			// The host makes a directory and a file in it now.
			newDir := filepath.Join(hostDir, "new")
			if err := os.Mkdir(newDir, 0o755); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the host's new directory followed", func() error {
				p := filepath.Join(newDir, "probe")
				mustAllow(t, sh(t, "echo x >> "+p)) // not the engine's own process
				for _, ev := range h.rec.all() {
					if ev.Kind == fsmon.KindChange && ev.Path == p {
						return nil
					}
				}
				return fmt.Errorf("no change event of %s", p)
			})
		})
	}
}
