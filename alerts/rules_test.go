// Package alerts holds the Prometheus alert rules (fsmon.rules.yml) and
// their promtool tests (fsmon.rules.test.yml); `make test-alerts` runs
// them too. This Go test runs the same promtool tests, so that a wrong
// change to a rule can be shown to fail them (tools/mutate runs go test).
package alerts

import (
	"os/exec"
	"testing"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

func TestPromtoolRules(t *testing.T) {
	promtool := testroot.RequireCommand(t, "promtool")
	if out, err := exec.Command(promtool, "check", "rules", "fsmon.rules.yml").CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if out, err := exec.Command(promtool, "test", "rules", "fsmon.rules.test.yml").CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}
