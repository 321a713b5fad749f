package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// The capabilities the daemon needs, measured in Docker with
// --cap-drop=ALL (deploy/helm/fsmon-exporter/README.md).
var wantCaps = []corev1.Capability{"SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH", "SYS_NICE", "SYS_CHROOT"}

const configPath = "/etc/fsmon_exporter/config.yml"

// checkPod checks what every DaemonSet of fsmon_exporter must have,
// whatever the values: the host's PID namespace, probes on the right
// paths, the configuration mounted as a directory at the one default
// path, the node's name for k8s.node.name, every node tolerated.
func checkPod(t *testing.T, cm *corev1.ConfigMap, spec *corev1.PodSpec, c *corev1.Container) {
	t.Helper()
	if !spec.HostPID {
		t.Error("hostPID is not true: the daemon would see neither the host's processes nor the containers' files")
	}
	probe := func(name string, p *corev1.Probe, path string) {
		t.Helper()
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s probe: none, or not an HTTP GET: %+v", name, p)
			return
		}
		if p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s probe: GET %s on port %s, want %s on port metrics", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
		}
	}
	probe("readiness", c.ReadinessProbe, "/-/ready")
	probe("liveness", c.LivenessProbe, "/-/healthy")
	probe("startup", c.StartupProbe, "/-/healthy")
	if len(c.Ports) != 1 || c.Ports[0].Name != "metrics" {
		t.Errorf("container ports %+v, want one named metrics", c.Ports)
	} else if want := "--web.listen-address=:" + itoa(c.Ports[0].ContainerPort); !slices.Contains(c.Args, want) {
		t.Errorf("args %q lack %s (the container port)", c.Args, want)
	}

	// Every node: a toleration with operator Exists and no key tolerates
	// every taint.
	every := false
	for _, tol := range spec.Tolerations {
		if tol.Operator == corev1.TolerationOpExists && tol.Key == "" && tol.Effect == "" {
			every = true
		}
	}
	if !every {
		t.Errorf("tolerations %+v do not tolerate every taint: tainted nodes (control plane, dedicated pools) go unprotected", spec.Tolerations)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}

	// k8s.node.name from the downward API; NODE_NAME defined before the
	// variable that refers to it, or $(NODE_NAME) is left as is.
	node, attrs := -1, -1
	for i, e := range c.Env {
		switch e.Name {
		case "NODE_NAME":
			node = i
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
				t.Errorf("NODE_NAME is %+v, want the downward API's spec.nodeName", e)
			}
		case "OTEL_RESOURCE_ATTRIBUTES":
			attrs = i
			if !slices.Contains(strings.Split(e.Value, ","), "k8s.node.name=$(NODE_NAME)") {
				t.Errorf("OTEL_RESOURCE_ATTRIBUTES=%q lacks k8s.node.name=$(NODE_NAME)", e.Value)
			}
		}
	}
	if node < 0 || attrs < 0 || node > attrs {
		t.Errorf("env %+v: want NODE_NAME (spec.nodeName) defined before OTEL_RESOURCE_ATTRIBUTES", c.Env)
	}

	// The configuration: --config.file at the one default path, in a
	// ConfigMap volume mounted as a directory (a subPath mount is never
	// updated by kubelet, so the daemon would never see a change).
	if !slices.Contains(c.Args, "--config.file="+configPath) {
		t.Errorf("args %q lack --config.file=%s", c.Args, configPath)
	}
	var vol *corev1.Volume
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == "config" {
			vol = &spec.Volumes[i]
		}
	}
	if vol == nil || vol.ConfigMap == nil || vol.ConfigMap.Name != cm.Name {
		t.Errorf("volume config is %+v, want the ConfigMap %s", vol, cm.Name)
	}
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.Name == "config" {
			mounted = m.MountPath == filepath.Dir(configPath) && m.SubPath == "" && m.ReadOnly
		}
	}
	if !mounted {
		t.Errorf("mounts %+v: want the volume config read-only at %s, no subPath", c.VolumeMounts, filepath.Dir(configPath))
	}
	if _, ok := cm.Data[filepath.Base(configPath)]; !ok {
		t.Errorf("ConfigMap %s has no key %s: %v", cm.Name, filepath.Base(configPath), cm.Data)
	}
}

// checkCapabilities checks a container that is not privileged: root with
// exactly the measured capabilities, everything else dropped.
func checkCapabilities(t *testing.T, c *corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("no securityContext")
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Errorf("privileged is %v, want false by default", ptrStr(sc.Privileged))
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("allowPrivilegeEscalation is %v, want false", ptrStr(sc.AllowPrivilegeEscalation))
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("runAsUser is %v, want 0 (the capabilities are a root process's)", ptrStr(sc.RunAsUser))
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("readOnlyRootFilesystem is %v, want true", ptrStr(sc.ReadOnlyRootFilesystem))
	}
	if sc.Capabilities == nil {
		t.Fatal("no capabilities: a container that is not privileged gets the runtime's defaults, without CAP_SYS_ADMIN")
	}
	if !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("capabilities drop %v, want [ALL]", sc.Capabilities.Drop)
	}
	got := slices.Clone(sc.Capabilities.Add)
	want := slices.Clone(wantCaps)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("capabilities add %v, want %v", sc.Capabilities.Add, wantCaps)
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("seccompProfile %+v, want RuntimeDefault", sc.SeccompProfile)
	}
}

// TestChartDefaults: the defaults make the DaemonSet, its ConfigMap,
// service account and headless Service, and nothing of the Prometheus
// Operator (whose CRDs a stock cluster lacks).
func TestChartDefaults(t *testing.T) {
	o := render(t, nil)
	ds, c := o.daemonSet(t)
	if len(o.serviceMonitors)+len(o.prometheusRules) != 0 {
		t.Errorf("defaults render %d ServiceMonitors and %d PrometheusRules: a stock cluster has no such kinds", len(o.serviceMonitors), len(o.prometheusRules))
	}
	if len(o.configMaps) != 1 || len(o.services) != 1 || len(o.serviceAccounts) != 1 {
		t.Errorf("defaults render %d ConfigMaps, %d Services, %d ServiceAccounts; want 1 each", len(o.configMaps), len(o.services), len(o.serviceAccounts))
	}
	cm := o.configMap(t, ds.Name)
	checkPod(t, cm, &ds.Spec.Template.Spec, c)
	checkCapabilities(t, c)

	ch := loadChart(t)
	if want := "ghcr.io/fsmon/fsmon_exporter:" + ch.Metadata.AppVersion; c.Image != want {
		t.Errorf("image %s, want %s (the chart's appVersion)", c.Image, want)
	}
	// The image `make image` builds is the one the chart runs.
	if out, err := exec.Command("make", "-s", "--no-print-directory", "-C", repoPath(t), "image-name").Output(); err != nil {
		t.Errorf("make image-name: %v", err)
	} else if got := strings.TrimSpace(string(out)); got != c.Image {
		t.Errorf("make image builds %s, the chart runs %s", got, c.Image)
	}

	// The default configuration is deploy/config.yml, the one the image
	// and the package ship (files/config.yml links to it).
	if got, want := cm.Data["config.yml"], string(readFile(t, "deploy", "config.yml")); got != want {
		t.Errorf("the ConfigMap's config.yml differs from deploy/config.yml:\n%s\nwant\n%s", got, want)
	}
	checkConfig(t, cm.Data["config.yml"])

	// Nothing is sent over OTLP by default.
	for _, e := range c.Env {
		if e.Name == "OTEL_EXPORTER_OTLP_ENDPOINT" || e.Name == "OTEL_LOGS_EXPORTER" || e.Name == "OTEL_TRACES_EXPORTER" {
			t.Errorf("default env sets %s=%q: an agent with no collector configured must connect to none", e.Name, e.Value)
		}
	}
	if !strings.Contains(o.notes, "rollout status") {
		t.Errorf("NOTES.txt: %q", o.notes)
	}
}

// checkConfig runs the daemon's own check on a configuration's text.
func checkConfig(t *testing.T, text string) {
	t.Helper()
	bin := testroot.Binary(t)
	f := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(f, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--config.check", "--config.file="+f).CombinedOutput()
	if err != nil {
		t.Errorf("fsmon_exporter --config.check on the chart's configuration: %v\n%s", err, out)
	}
}

// TestChartPrivileged: privileged stays a value; then no capability list
// (privileged has them all) and no allowPrivilegeEscalation: false, which
// the API server rejects beside privileged: true.
func TestChartPrivileged(t *testing.T) {
	o := render(t, map[string]any{"privileged": true})
	ds, c := o.daemonSet(t)
	checkPod(t, o.configMap(t, ds.Name), &ds.Spec.Template.Spec, c)
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Fatalf("privileged: true rendered securityContext %+v", sc)
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation: false beside privileged: true (the API server rejects the pod)")
	}
	if sc.Capabilities != nil {
		t.Errorf("capabilities %+v beside privileged", sc.Capabilities)
	}
}

// TestChartValues: OTLP settings, the image's tag and digest, and a
// configuration given in the values.
func TestChartValues(t *testing.T) {
	o := render(t, map[string]any{
		"image": map[string]any{"tag": "9.9.9"},
		"otel": map[string]any{
			"endpoint":           "http://otel-agent.observability:4317",
			"protocol":           "grpc",
			"tracesExporter":     "otlp",
			"resourceAttributes": map[string]any{"deployment.environment.name": "prod"},
			"headersSecret":      map[string]any{"name": "otlp-auth", "key": "headers"},
		},
		"config": map[string]any{
			"mode": "protect",
			"profiles": []any{map[string]any{"name": "host", "host": true, "filters": []any{
				map[string]any{"path": "/etc/shadow", "behavior": "block", "allow": []any{"/usr/sbin/unix_chkpwd"}},
			}}},
		},
	})
	ds, c := o.daemonSet(t)
	cm := o.configMap(t, ds.Name)
	checkPod(t, cm, &ds.Spec.Template.Spec, c)
	if c.Image != "ghcr.io/fsmon/fsmon_exporter:9.9.9" {
		t.Errorf("image.tag 9.9.9 rendered image %s", c.Image)
	}
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	for k, v := range map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-agent.observability:4317",
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
		"OTEL_TRACES_EXPORTER":        "otlp",
		"OTEL_RESOURCE_ATTRIBUTES":    "k8s.node.name=$(NODE_NAME),deployment.environment.name=prod",
	} {
		if env[k].Value != v {
			t.Errorf("%s=%q, want %q", k, env[k].Value, v)
		}
	}
	if h := env["OTEL_EXPORTER_OTLP_HEADERS"]; h.ValueFrom == nil || h.ValueFrom.SecretKeyRef == nil || h.ValueFrom.SecretKeyRef.Name != "otlp-auth" || h.ValueFrom.SecretKeyRef.Key != "headers" {
		t.Errorf("OTEL_EXPORTER_OTLP_HEADERS %+v, want the Secret otlp-auth's key headers", h)
	}
	var cfg map[string]any
	if err := yaml.UnmarshalStrict([]byte(cm.Data["config.yml"]), &cfg); err != nil || cfg["mode"] != "protect" {
		t.Errorf("config from the values rendered %q (%v)", cm.Data["config.yml"], err)
	}
	checkConfig(t, cm.Data["config.yml"])

	o = render(t, map[string]any{"image": map[string]any{"tag": "9.9.9", "digest": "sha256:" + strings.Repeat("ab", 32)}})
	if _, c := o.daemonSet(t); c.Image != "ghcr.io/fsmon/fsmon_exporter@sha256:"+strings.Repeat("ab", 32) {
		t.Errorf("image.digest rendered image %s", c.Image)
	}
}

// TestChartSchema: values.schema.json turns typos and wrong values into
// errors at `helm install`, before a pod starts.
func TestChartSchema(t *testing.T) {
	ch := loadChart(t)
	for _, bad := range []map[string]any{
		{"privilegd": true},
		{"logFormat": "xml"},
		{"port": 0},
		{"otel": map[string]any{"protocol": "http"}},
		{"serviceMonitor": map[string]any{"enabled": true, "interval": "often"}},
		{"capabilities": "SYS_ADMIN"},
	} {
		if _, err := renderErr(t, ch, bad); err == nil {
			t.Errorf("values %v rendered: want a schema error", bad)
		} else if !strings.Contains(err.Error(), "schema") {
			t.Errorf("values %v: %v (not the schema's error)", bad, err)
		}
	}
	if _, err := renderErr(t, ch, map[string]any{"serviceMonitor": map[string]any{"enabled": true}, "service": map[string]any{"enabled": false}}); err == nil {
		t.Error("a ServiceMonitor without the Service rendered: it would scrape nothing")
	}
}

// TestChartOptional: the ServiceMonitor scrapes the Service's port, the
// PrometheusRule is alerts/fsmon.rules.yml and passes its promtool tests,
// the dashboards ConfigMap has every dashboard of dashboards/, labelled
// for Grafana's sidecar.
func TestChartOptional(t *testing.T) {
	o := render(t, map[string]any{
		"serviceMonitor": map[string]any{"enabled": true, "labels": map[string]any{"release": "kube-prometheus-stack"}},
		"prometheusRule": map[string]any{"enabled": true, "labels": map[string]any{"release": "kube-prometheus-stack"}},
		"dashboards":     map[string]any{"enabled": true, "annotations": map[string]any{"grafana_folder": "fsmon"}},
	})
	ds, c := o.daemonSet(t)
	checkPod(t, o.configMap(t, ds.Name), &ds.Spec.Template.Spec, c)

	// ServiceMonitor -> Service -> pods.
	if len(o.serviceMonitors) != 1 || len(o.services) != 1 {
		t.Fatalf("%d ServiceMonitors, %d Services rendered, want 1 each", len(o.serviceMonitors), len(o.services))
	}
	sm, svc := o.serviceMonitors[0], o.services[0]
	if sm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v lack serviceMonitor.labels", sm.Labels)
	}
	if !selects(sm.Spec.Selector.MatchLabels, svc.Labels) {
		t.Errorf("ServiceMonitor selector %v does not select the Service's labels %v", sm.Spec.Selector.MatchLabels, svc.Labels)
	}
	if !slices.Contains(sm.Spec.NamespaceSelector.MatchNames, svc.Namespace) {
		t.Errorf("ServiceMonitor namespaces %v lack the Service's %s", sm.Spec.NamespaceSelector.MatchNames, svc.Namespace)
	}
	if !selects(svc.Spec.Selector, ds.Spec.Template.Labels) {
		t.Errorf("Service selector %v does not select the pods' labels %v", svc.Spec.Selector, ds.Spec.Template.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" || len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Errorf("ServiceMonitor endpoints %+v, Service ports %+v: want both on the port named metrics", sm.Spec.Endpoints, svc.Spec.Ports)
	}
	// FsmonDown matches a job with fsmon in its name; the job is the Service's name.
	if sm.Spec.JobLabel == "" && !strings.Contains(svc.Name, "fsmon") {
		t.Errorf("the scrape job will be %q, which FsmonDown's job=~\".*fsmon.*\" does not match", svc.Name)
	}

	// PrometheusRule: the same groups as alerts/fsmon.rules.yml.
	if len(o.prometheusRules) != 1 {
		t.Fatalf("%d PrometheusRules rendered, want 1", len(o.prometheusRules))
	}
	pr := o.prometheusRules[0]
	if pr.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("PrometheusRule labels %v lack prometheusRule.labels", pr.Labels)
	}
	var want monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(readFile(t, "alerts", "fsmon.rules.yml"), &want); err != nil {
		t.Fatalf("alerts/fsmon.rules.yml as a PrometheusRule's spec: %v", err)
	}
	if !reflect.DeepEqual(pr.Spec, want) {
		a, _ := yaml.Marshal(pr.Spec)
		b, _ := yaml.Marshal(want)
		t.Errorf("the PrometheusRule's spec is not alerts/fsmon.rules.yml:\n%s\nwant\n%s", a, b)
	}
	promtoolRules(t, pr)

	// Dashboards: one key per dashboards/*.json, byte for byte.
	dm := o.configMap(t, ds.Name+"-dashboards")
	if dm.Labels["grafana_dashboard"] != "1" || dm.Annotations["grafana_folder"] != "fsmon" {
		t.Errorf("dashboards ConfigMap labels %v annotations %v: want grafana_dashboard: \"1\" and the values' annotations", dm.Labels, dm.Annotations)
	}
	files, _ := filepath.Glob(repoPath(t, "dashboards", "*.json"))
	if len(files) == 0 {
		t.Fatal("no dashboards/*.json")
	}
	var keys []string
	for k := range dm.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var names []string
	for _, f := range files {
		names = append(names, filepath.Base(f))
		b, _ := os.ReadFile(f)
		if dm.Data[filepath.Base(f)] != string(b) {
			t.Errorf("dashboards ConfigMap's %s differs from dashboards/%s (a link in files/dashboards/ missing or replaced by a copy?)", filepath.Base(f), filepath.Base(f))
		}
	}
	if !slices.Equal(keys, names) {
		t.Errorf("dashboards ConfigMap has %v, dashboards/ has %v: add a link in deploy/helm/fsmon-exporter/files/dashboards/", keys, names)
	}
}

// promtoolRules runs alerts/fsmon.rules.test.yml against the rules taken
// from the rendered PrometheusRule, not against the file they came from.
func promtoolRules(t *testing.T, pr *monitoringv1.PrometheusRule) {
	t.Helper()
	promtool := testroot.RequireCommand(t, "promtool")
	dir := t.TempDir()
	rules, err := yaml.Marshal(pr.Spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fsmon.rules.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "fsmon.rules.test.yml"), readFile(t, "alerts", "fsmon.rules.test.yml"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"check", "rules", "fsmon.rules.yml"}, {"test", "rules", "fsmon.rules.test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s on the PrometheusRule's rules: %v\n%s", strings.Join(args, " "), err, out)
		} else {
			t.Logf("promtool %s: %s", strings.Join(args, " "), lastLine(out))
		}
	}
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }

func ptrStr[T any](p *T) any {
	if p == nil {
		return "unset"
	}
	return *p
}
