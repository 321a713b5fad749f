package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
)

// rateInterval stands in for $__rate_interval: an odd duration no panel
// would write by hand, so the test can tell every range came from it.
const rateInterval = 7777 * time.Second

// Grafana's built-in variables that can stand in a PromQL query, and what
// they become for the parser.
var builtinVars = map[string]string{
	"__rate_interval": "7777s",
	"__interval":      "1m",
	"__interval_ms":   "60000",
	"__range":         "1h",
	"__range_s":       "3600",
	"__range_ms":      "3600000",
}

// The uid of each dashboard, which links and users' bookmarks depend on.
var dashboardUIDs = map[string]string{
	"fsmon-overview.json":     "fsmon-overview",
	"fsmon-agent-health.json": "fsmon-agent-health",
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Datasource  *datasourceRef `json:"datasource"`
	Panels      []panel        `json:"panels"` // a row's, when collapsed
	Targets     []target       `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
}

type target struct {
	RefID        string         `json:"refId"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat"`
	Datasource   *datasourceRef `json:"datasource"`
}

type variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Definition string          `json:"definition"`
	Datasource *datasourceRef  `json:"datasource"`
}

// queryString is a query variable's query, in either of the shapes Grafana
// writes: a plain string or {"query": "..."}.
func (v variable) queryString() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(v.Query, &o) == nil {
		return o.Query
	}
	return ""
}

func loadDashboards(t *testing.T) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob(repoPath(t, "dashboards", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no dashboards/*.json")
	}
	out := map[string]dashboard{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = d
	}
	return out
}

// allPanels flattens rows.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

var varRef = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[A-Za-z0-9_]+)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]`)

// substitute replaces Grafana variables with values the PromQL parser
// accepts. Dashboard variables become a plain word: they only ever stand
// in label values (=~"$job"). An unknown variable is an error.
func substitute(expr string, vars map[string]bool) (string, error) {
	var bad []string
	out := varRef.ReplaceAllStringFunc(expr, func(m string) string {
		sm := varRef.FindStringSubmatch(m)
		name := sm[1] + sm[2] + sm[3]
		if v, ok := builtinVars[name]; ok {
			return v
		}
		if vars[name] {
			return "value_of_" + name
		}
		bad = append(bad, m)
		return m
	})
	if len(bad) > 0 {
		return "", fmt.Errorf("unknown variable(s) %v", bad)
	}
	return out, nil
}

var labelValuesQuery = regexp.MustCompile(`^\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)

func TestDashboards(t *testing.T) {
	exp := exposedSeries(t)
	boards := loadDashboards(t)
	for file := range dashboardUIDs {
		if _, ok := boards[file]; !ok {
			t.Errorf("dashboards/%s is missing", file)
		}
	}
	uids := map[string]string{}
	for file, d := range boards {
		t.Run(file, func(t *testing.T) {
			checkDashboard(t, file, d, exp)
		})
		if other, ok := uids[d.UID]; ok {
			t.Errorf("%s and %s share the uid %q", file, other, d.UID)
		}
		uids[d.UID] = file
	}
}

func checkDashboard(t *testing.T, file string, d dashboard, exp map[string]*series) {
	want, ok := dashboardUIDs[file]
	switch {
	case d.UID == "":
		t.Error("no uid")
	case !ok:
		t.Errorf("uid %q: add the file to dashboardUIDs so its uid stays stable", d.UID)
	case d.UID != want:
		t.Errorf("uid %q, want %q: links and bookmarks depend on it", d.UID, want)
	}
	if d.Title == "" {
		t.Error("no title")
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d: Grafana 10 writes 36 or later", d.SchemaVersion)
	}

	// Variables: datasource (Prometheus), then job and instance from
	// label_values queries on the exporter's metrics.
	vars := map[string]bool{}
	byName := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		byName[v.Name] = v
	}
	if v, ok := byName["datasource"]; !ok || v.Type != "datasource" || v.queryString() != "prometheus" {
		t.Errorf("want a variable datasource of type datasource for prometheus, have %+v", v)
	}
	for _, name := range []string{"job", "instance"} {
		if v, ok := byName[name]; !ok || v.Type != "query" {
			t.Errorf("want a query variable %s", name)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		where := fmt.Sprintf("variable %s", v.Name)
		checkDatasource(t, where, v.Datasource)
		q := v.queryString()
		m := labelValuesQuery.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("%s: query %q is not label_values(selector, label)", where, q)
			continue
		}
		sel, err := substitute(m[1], vars)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			continue
		}
		if e := checkExpr(t, where, sel, exp); e != nil {
			if have := labelsUnder(e, exp); !have[m[2]] {
				t.Errorf("%s: label_values of %q, which %s does not have", where, m[2], sel)
			}
		}
		if v.Definition != "" && v.Definition != q {
			t.Errorf("%s: definition %q differs from query %q", where, v.Definition, q)
		}
	}

	ids := map[int]string{}
	targets := 0
	for _, p := range allPanels(d.Panels) {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if p.ID == 0 {
			t.Errorf("%s: no id", where)
		} else if other, ok := ids[p.ID]; ok {
			t.Errorf("%s: id also used by %q", where, other)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		if p.Title == "" {
			t.Errorf("%s: no title", where)
		}
		if p.FieldConfig.Defaults.Unit == "" {
			t.Errorf("%s: no unit (fieldConfig.defaults.unit)", where)
		}
		checkDatasource(t, where, p.Datasource)
		if len(p.Targets) == 0 {
			t.Errorf("%s: no query", where)
		}
		for _, tg := range p.Targets {
			targets++
			w := fmt.Sprintf("%s, query %s", where, tg.RefID)
			checkDatasource(t, w, tg.Datasource)
			checkTarget(t, w, tg, vars, exp)
		}
	}
	if targets == 0 {
		t.Error("no queries at all")
	}
}

func checkDatasource(t *testing.T, where string, ds *datasourceRef) {
	t.Helper()
	if ds == nil || ds.Type != "prometheus" || (ds.UID != "${datasource}" && ds.UID != "$datasource") {
		t.Errorf("%s: datasource %+v, want {type: prometheus, uid: ${datasource}}", where, ds)
	}
}

var legendLabel = regexp.MustCompile(`\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`)

func checkTarget(t *testing.T, where string, tg target, vars map[string]bool, exp map[string]*series) {
	t.Helper()
	if strings.TrimSpace(tg.Expr) == "" {
		t.Errorf("%s: empty expr", where)
		return
	}
	if strings.Contains(tg.Expr, "[") && !strings.Contains(tg.Expr, "$__rate_interval") {
		t.Errorf("%s: a range that is not $__rate_interval: %s", where, tg.Expr)
	}
	expr, err := substitute(tg.Expr, vars)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	e := checkExpr(t, where, expr, exp)
	if e == nil {
		return
	}
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.MatrixSelector:
			if n.Range != rateInterval {
				t.Errorf("%s: range %s, want $__rate_interval: %s", where, n.Range, tg.Expr)
			}
		case *parser.SubqueryExpr:
			t.Errorf("%s: subquery; use $__rate_interval ranges: %s", where, tg.Expr)
		}
		return nil
	})
	have := labelsUnder(e, exp)
	for _, m := range legendLabel.FindAllStringSubmatch(tg.LegendFormat, -1) {
		if !have[m[1]] {
			t.Errorf("%s: legend uses {{%s}}, a label none of its series has", where, m[1])
		}
	}
}

// TestOverviewShowsChangesByFilter: the overview has a panel of the
// changes of watched files by filter (fsmon_changes_total), so that a
// change to /etc/shadow is not lost in a profile's sum.
func TestOverviewShowsChangesByFilter(t *testing.T) {
	d := loadDashboards(t)["fsmon-overview.json"]
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			e, err := parser.NewParser(parser.Options{}).ParseExpr(strings.NewReplacer("$__rate_interval", "5m", "$job", "j", "$instance", "i", "$profile", "p").Replace(tg.Expr))
			if err != nil {
				continue
			}
			byFilter, changes := false, false
			parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
				switch n := n.(type) {
				case *parser.AggregateExpr:
					byFilter = byFilter || !n.Without && slices.Contains(n.Grouping, "filter")
				case *parser.VectorSelector:
					changes = changes || n.Name == "fsmon_changes_total"
				}
				return nil
			})
			if byFilter && changes && strings.Contains(tg.LegendFormat, "{{filter}}") {
				return
			}
		}
	}
	t.Fatal("no panel of the overview shows fsmon_changes_total by filter")
}
