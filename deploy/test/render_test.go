// Package test holds the tests of deploy/: the Helm chart rendered with
// Helm's own Go SDK and decoded strictly into the Kubernetes and
// Prometheus Operator types, the plain manifests, the image (`make
// image`) and the Debian package (`make deb`). A module of its own, so
// that Helm, k8s.io/api and the operator's types stay out of the
// daemon's module.
package test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// repoPath is a path inside the repository, two levels above this package.
func repoPath(t testing.TB, elem ...string) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source")
	}
	return filepath.Join(append([]string{filepath.Dir(file), "..", ".."}, elem...)...)
}

func chartDir(t testing.TB) string { return repoPath(t, "deploy", "helm", "fsmon-exporter") }

// loadChart loads the chart as `helm install` does from a directory
// (following the links of files/).
func loadChart(t testing.TB) *chart.Chart {
	t.Helper()
	ch, err := loader.LoadDir(chartDir(t))
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return ch
}

const (
	releaseName      = "fsmon"
	releaseNamespace = "monitoring"
)

// objects is a rendered chart, decoded: every object of every template,
// each in the type of its kind.
type objects struct {
	serviceAccounts []*corev1.ServiceAccount
	configMaps      []*corev1.ConfigMap
	daemonSets      []*appsv1.DaemonSet
	services        []*corev1.Service
	serviceMonitors []*monitoringv1.ServiceMonitor
	prometheusRules []*monitoringv1.PrometheusRule
	notes           string
}

// renderErr renders the chart with values (as `helm template` would:
// values.yaml, then these, checked against values.schema.json).
func renderErr(t testing.TB, ch *chart.Chart, values map[string]any) (map[string]string, error) {
	t.Helper()
	return renderAs(ch, releaseName, releaseNamespace, values)
}

// renderAs renders the chart as release name in namespace.
func renderAs(ch *chart.Chart, name, namespace string, values map[string]any) (map[string]string, error) {
	opts := chartutil.ReleaseOptions{Name: name, Namespace: namespace, Revision: 1, IsInstall: true}
	vals, err := chartutil.ToRenderValues(ch, values, opts, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, vals)
}

// render renders and decodes every object strictly: an unknown field, a
// duplicate key or a kind the test does not know fails the test.
func render(t testing.TB, values map[string]any) *objects {
	t.Helper()
	files, err := renderErr(t, loadChart(t), values)
	if err != nil {
		t.Fatalf("rendering the chart with %v: %v", values, err)
	}
	return decodeFiles(t, files)
}

// decodeFiles decodes rendered files (name: text) strictly.
func decodeFiles(t testing.TB, files map[string]string) *objects {
	t.Helper()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	o := &objects{}
	for _, name := range names {
		text := files[name]
		if strings.HasSuffix(name, "NOTES.txt") {
			o.notes = text
			continue
		}
		for i, doc := range splitDocs(text) {
			if err := o.decode(doc); err != nil {
				t.Fatalf("%s, document %d: %v\n%s", name, i, err, doc)
			}
		}
	}
	return o
}

// splitDocs splits a YAML stream into its non-empty documents.
func splitDocs(text string) []string {
	var docs []string
	for _, d := range strings.Split("\n"+text, "\n---") {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, d)
		}
	}
	return docs
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// decode decodes one object into the type its apiVersion and kind name.
func (o *objects) decode(doc string) error {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
		return err
	}
	strict := func(v any) error {
		if err := yaml.UnmarshalStrict([]byte(doc), v); err != nil {
			return fmt.Errorf("%s %s: %w", meta.APIVersion, meta.Kind, err)
		}
		return nil
	}
	switch meta.APIVersion + " " + meta.Kind {
	case "v1 ServiceAccount":
		v := &corev1.ServiceAccount{}
		o.serviceAccounts = append(o.serviceAccounts, v)
		return strict(v)
	case "v1 ConfigMap":
		v := &corev1.ConfigMap{}
		o.configMaps = append(o.configMaps, v)
		return strict(v)
	case "apps/v1 DaemonSet":
		v := &appsv1.DaemonSet{}
		o.daemonSets = append(o.daemonSets, v)
		return strict(v)
	case "v1 Service":
		v := &corev1.Service{}
		o.services = append(o.services, v)
		return strict(v)
	case "monitoring.coreos.com/v1 ServiceMonitor":
		v := &monitoringv1.ServiceMonitor{}
		o.serviceMonitors = append(o.serviceMonitors, v)
		return strict(v)
	case "monitoring.coreos.com/v1 PrometheusRule":
		v := &monitoringv1.PrometheusRule{}
		o.prometheusRules = append(o.prometheusRules, v)
		return strict(v)
	case "v1 Namespace":
		return strict(&corev1.Namespace{})
	}
	return fmt.Errorf("an object of apiVersion %q kind %q, which this test does not know", meta.APIVersion, meta.Kind)
}

// daemonSet is the one DaemonSet and its one container.
func (o *objects) daemonSet(t testing.TB) (*appsv1.DaemonSet, *corev1.Container) {
	t.Helper()
	if len(o.daemonSets) != 1 {
		t.Fatalf("%d DaemonSets rendered, want 1", len(o.daemonSets))
	}
	ds := o.daemonSets[0]
	if n := len(ds.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("the DaemonSet has %d containers, want 1", n)
	}
	return ds, &ds.Spec.Template.Spec.Containers[0]
}

// configMap is the ConfigMap named name.
func (o *objects) configMap(t testing.TB, name string) *corev1.ConfigMap {
	t.Helper()
	for _, c := range o.configMaps {
		if c.Name == name {
			return c
		}
	}
	var have []string
	for _, c := range o.configMaps {
		have = append(have, c.Name)
	}
	t.Fatalf("no ConfigMap %q rendered (have %v)", name, have)
	return nil
}

func readFile(t testing.TB, elem ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(repoPath(t, elem...))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sameBytes(a, b []byte) bool { return bytes.Equal(a, b) }
