package test

import (
	"os"
	"sort"
	"strings"
	"testing"
)

// The plain manifests of deploy/kubernetes/ are the chart's defaults,
// rendered: kubectl users get what Helm users get, and the two cannot
// drift. Regenerate with `make manifests` after changing the chart.
const (
	manifestFile      = "deploy/kubernetes/daemonset.yaml"
	manifestRelease   = "fsmon-exporter"
	manifestNamespace = "fsmon"
)

func manifestText(t *testing.T) string {
	t.Helper()
	files, err := renderAs(loadChart(t), manifestRelease, manifestNamespace, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for n := range files {
		if strings.HasSuffix(n, ".yaml") && strings.TrimSpace(stripComments(files[n])) != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString(`# fsmon_exporter on every node, for kubectl apply -f: the Helm chart's
# defaults (deploy/helm/fsmon-exporter), rendered as release
# ` + manifestRelease + ` in namespace ` + manifestNamespace + `. Do not edit: change the chart and
# run make manifests (deploy/test checks that this file is the chart's).
# Root with five capabilities (CAP_SYS_ADMIN, CAP_SYS_PTRACE,
# CAP_DAC_READ_SEARCH, CAP_SYS_NICE, CAP_SYS_CHROOT), not privileged, in the host's PID
# namespace: deploy/helm/fsmon-exporter/README.md says why each.
apiVersion: v1
kind: Namespace
metadata:
  name: ` + manifestNamespace + `
`)
	for _, n := range names {
		b.WriteString("---\n# Source: " + n + "\n")
		b.WriteString(strings.TrimLeft(strings.TrimSpace(files[n]), "-\n") + "\n")
	}
	return b.String()
}

// TestManifests: deploy/kubernetes/daemonset.yaml is the chart's default
// rendering, and decodes strictly into the same checked DaemonSet.
func TestManifests(t *testing.T) {
	want := manifestText(t)
	path := repoPath(t, manifestFile)
	if os.Getenv("FSMON_UPDATE_MANIFESTS") == "1" {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", manifestFile)
	}
	got := string(readFile(t, manifestFile))
	if got != want {
		t.Errorf("%s is not the chart's defaults rendered: run `make manifests`", manifestFile)
	}
	o := decodeFiles(t, map[string]string{manifestFile: got})
	ds, c := o.daemonSet(t)
	if ds.Namespace != manifestNamespace {
		t.Errorf("DaemonSet in namespace %q", ds.Namespace)
	}
	checkPod(t, o.configMap(t, ds.Name), &ds.Spec.Template.Spec, c)
	checkCapabilities(t, c)
	if !strings.HasSuffix(c.Image, ":"+loadChart(t).Metadata.AppVersion) {
		t.Errorf("image %s is not pinned to the chart's appVersion", c.Image)
	}
}
