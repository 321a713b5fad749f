package test

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// The alerts the README and docs/runbook.md promise.
var designAlerts = []string{
	"FsmonAccessDenied",
	"FsmonPermissionDefaultAnswers",
	"FsmonProtectionIncomplete",
	"FsmonUnjudgedDescriptors",
	"FsmonProtectedFilesWithoutPreContent",
	"FsmonProfileCoversNothing",
	"FsmonAccessViolation",
	"FsmonEventsDropped",
	"FsmonKernelQueueOverflow",
	"FsmonConfigReloadFailed",
	"FsmonInotifyWatchesNearLimit",
	"FsmonDown",
}

const runbookBase = "https://github.com/fsmon/fsmon_exporter/blob/main/docs/runbook.md#"

var severities = map[string]bool{"critical": true, "warning": true, "info": true}

func loadRules(t *testing.T) map[string][]rulefmt.Rule {
	t.Helper()
	files, err := filepath.Glob(repoPath(t, "alerts", "*.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no alerts/*.rules.yml")
	}
	alerts := map[string][]rulefmt.Rule{}
	for _, f := range files {
		rgs, errs := rulefmt.ParseFile(f, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
		for _, err := range errs {
			t.Errorf("%v", err)
		}
		if rgs == nil {
			continue
		}
		for _, g := range rgs.Groups {
			for _, r := range g.Rules {
				if r.Alert != "" {
					alerts[r.Alert] = append(alerts[r.Alert], r)
				}
			}
		}
	}
	return alerts
}

// runbookAnchors are the GitHub anchors of the headings of docs/runbook.md.
func runbookAnchors(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(repoPath(t, "docs", "runbook.md"))
	if err != nil {
		t.Fatalf("the runbook_url annotations point at docs/runbook.md: %v", err)
	}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	anchors := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(line, "#")))
		anchors[strings.ReplaceAll(drop.ReplaceAllString(h, ""), " ", "-")] = true
	}
	return anchors
}

func TestAlertRules(t *testing.T) {
	exp := exposedSeries(t)
	alerts := loadRules(t)
	anchors := runbookAnchors(t)
	for _, name := range designAlerts {
		if _, ok := alerts[name]; !ok {
			t.Errorf("alert %s of the design is missing", name)
		}
	}
	for name, rules := range alerts {
		for i, r := range rules {
			where := fmt.Sprintf("alert %s (rule %d)", name, i+1)
			checkExpr(t, where, r.Expr, exp)
			if sev := r.Labels["severity"]; !severities[sev] {
				t.Errorf("%s: severity %q, want critical, warning or info", where, sev)
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", where, a)
				}
			}
			want := runbookBase + strings.ToLower(name)
			if u := r.Annotations["runbook_url"]; u != want {
				t.Errorf("%s: runbook_url %q, want %q", where, u, want)
			}
			if !anchors[strings.ToLower(name)] {
				t.Errorf("%s: docs/runbook.md has no section %s (anchor #%s)", where, name, strings.ToLower(name))
			}
		}
	}
	if a := alerts["FsmonAccessDenied"]; len(a) > 0 {
		if a[0].Labels["severity"] != "critical" {
			t.Errorf("FsmonAccessDenied must page: severity %q", a[0].Labels["severity"])
		}
		if a[0].For != 0 {
			t.Errorf("FsmonAccessDenied must fire within one evaluation: for %s", a[0].For)
		}
		for _, l := range []string{"profile", "filter", "container"} {
			if !strings.Contains(a[0].Annotations["description"], "$labels."+l) {
				t.Errorf("FsmonAccessDenied's description does not name the %s", l)
			}
		}
	}
}

// promtoolTests is the shape of a promtool test file, as far as coverage
// goes.
type promtoolTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name          string `yaml:"name"`
		AlertRuleTest []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `yaml:"exp_labels"`
				ExpAnnotations map[string]string `yaml:"exp_annotations"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestAlertRulesCoveredByPromtool checks that the promtool tests (run by
// `make test-alerts`) evaluate every alert both firing, with exact labels
// and annotations, and not firing.
func TestAlertRulesCoveredByPromtool(t *testing.T) {
	alerts := loadRules(t)
	files, err := filepath.Glob(repoPath(t, "alerts", "*.test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var pt promtoolTests
		if err := yaml.Unmarshal(b, &pt); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, tc := range pt.Tests {
			for _, at := range tc.AlertRuleTest {
				if len(at.ExpAlerts) == 0 {
					quiet[at.Alertname] = true
					continue
				}
				firing[at.Alertname] = true
				for _, ea := range at.ExpAlerts {
					if ea.ExpLabels["severity"] == "" {
						t.Errorf("%s: test %q expects %s without its severity label", f, tc.Name, at.Alertname)
					}
					for _, a := range []string{"summary", "description", "runbook_url"} {
						if ea.ExpAnnotations[a] == "" {
							t.Errorf("%s: test %q expects %s without checking its %s", f, tc.Name, at.Alertname, a)
						}
					}
				}
			}
		}
	}
	for name := range alerts {
		if !firing[name] {
			t.Errorf("no promtool test sees %s firing", name)
		}
		if !quiet[name] {
			t.Errorf("no promtool test sees %s not firing", name)
		}
	}
}
