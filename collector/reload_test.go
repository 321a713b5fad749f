package collector

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestReloadMetrics(t *testing.T) {
	r := NewReloadMetrics()
	const head = `# HELP fsmon_config_last_reload_success_timestamp_seconds Time of the last successful configuration load, in seconds since the Unix epoch.
# TYPE fsmon_config_last_reload_success_timestamp_seconds gauge
fsmon_config_last_reload_success_timestamp_seconds %s
# HELP fsmon_config_last_reload_successful 1 if the last configuration load succeeded, 0 if it failed and the previous configuration stays in force.
# TYPE fsmon_config_last_reload_successful gauge
fsmon_config_last_reload_successful %s
`
	check := func(step, ts, ok string) {
		t.Helper()
		want := strings.Replace(head, "%s", ts, 1)
		want = strings.Replace(want, "%s", ok, 1)
		if err := testutil.CollectAndCompare(r, strings.NewReader(want)); err != nil {
			t.Errorf("%s: %v", step, err)
		}
	}
	check("before any load", "0", "0")

	first := time.Unix(1700000000, 500_000_000)
	r.Set(true, first)
	check("initial load", "1.7000000005e+09", "1")

	// A failed reload keeps the time of the last success.
	r.Set(false, first.Add(time.Minute))
	check("failed reload", "1.7000000005e+09", "0")

	r.Set(true, first.Add(2*time.Minute))
	check("good reload", "1.7000001205e+09", "1")
}
