package container

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The state files below are what the runtimes on the test machines
// wrote (Docker 20.10, podman 4.3, containerd 1.6's CRI plugin), cut
// to the fields that matter and the ones next to them.
const (
	dockerState = `{"StreamConfig":{},"State":{"Running":true,"Pid":4242},"ID":"` + id + `","Path":"/bin/sleep",` +
		`"Config":{"Hostname":"3f1a9c2b7d4e","Env":["PATH=/bin"],"Cmd":["/bin/sleep","inf"],"Image":"fsmon-test/busybox:local","Labels":{}},` +
		`"Image":"sha256:4c10ae9509dd06fcc5c8ab7c77656019f2b7dfdd82806d5a9a3c4c01bc136c5e","Name":"/web1","Driver":"overlay2"}`
	podmanContainers = `[{"id":"` + other + `","names":["older"],"image":"6e88","metadata":"{\"image-name\":\"localhost/x:1\",\"name\":\"older\"}"},` +
		`{"id":"` + id + `","names":["pweb1"],"image":"6e886a0a28d0d89649ba2fce448436062a88ea68321db8c54b52cdad6c24c5ab",` +
		`"layer":"8fbb","metadata":"{\"image-name\":\"localhost/fsmon-test/busybox:local\",\"image-id\":\"6e88\",\"name\":\"pweb1\",\"created-at\":1796221424}",` +
		`"created":"2026-12-02T14:23:44.091062833Z","flags":{"MountLabel":"","ProcessLabel":""}}]`
	podmanOCI = `{"ociVersion":"1.0.2-dev","hostname":"3f1a9c2b7d4e","annotations":{"io.container.manager":"libpod",` +
		`"io.kubernetes.cri-o.Created":"2026-12-02T14:23:44Z","io.podman.annotations.autoremove":"FALSE"}}`
	containerdCRI = `{"ociVersion":"1.0.2-dev","annotations":{"io.kubernetes.cri.container-name":"app","io.kubernetes.cri.container-type":"container",` +
		`"io.kubernetes.cri.image-name":"docker.io/fsmon-test/busybox:local","io.kubernetes.cri.sandbox-id":"` + other + `",` +
		`"io.kubernetes.cri.sandbox-name":"api-7d9f","io.kubernetes.cri.sandbox-namespace":"prod","io.kubernetes.cri.sandbox-uid":"0c1d-22"}}`
	crioOCI = `{"annotations":{"io.kubernetes.container.name":"app","io.kubernetes.cri-o.ImageName":"registry/app:2",` +
		`"io.kubernetes.pod.name":"job-1","io.kubernetes.pod.namespace":"batch","io.kubernetes.pod.uid":"9f-1"}}`
)

const other = "aa00000000000000000000000000000000000000000000000000000000000001"

func TestParseState(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     Meta
		ok       bool
	}{
		{"docker config.v2.json", dockerState, Meta{Name: "web1", Image: "fsmon-test/busybox:local"}, true},
		{"podman containers.json", podmanContainers, Meta{Name: "pweb1", Image: "localhost/fsmon-test/busybox:local"}, true},
		{"podman config.json names nothing", podmanOCI, Meta{}, false},
		{"containerd CRI config.json", containerdCRI,
			Meta{Name: "app", Image: "docker.io/fsmon-test/busybox:local", Pod: &Pod{Namespace: "prod", Name: "api-7d9f", UID: "0c1d-22"}}, true},
		{"CRI-O config.json", crioOCI, Meta{Name: "app", Image: "registry/app:2", Pod: &Pod{Namespace: "batch", Name: "job-1", UID: "9f-1"}}, true},
		{"garbage", "not json", Meta{}, false},
		{"podman list without the id", `[{"id":"` + other + `","names":["x"]}]`, Meta{}, false},
	} {
		m, ok := ParseState([]byte(tc.in), id)
		if ok != tc.ok || !reflect.DeepEqual(m, tc.want) {
			t.Errorf("%s: got %+v (pod %+v) %v, want %+v (pod %+v) %v", tc.name, m, m.Pod, ok, tc.want, tc.want.Pod, tc.ok)
		}
	}
}

// TestStateFilesLayouts puts each runtime's state where that runtime
// keeps it below a host root and looks the id up: each layout is found,
// and a file of another id or at another place is not.
func TestStateFilesLayouts(t *testing.T) {
	for _, tc := range []struct {
		name, path, content string
		want                Meta
	}{
		{"docker", "var/lib/docker/containers/" + id + "/config.v2.json", dockerState, Meta{Name: "web1", Image: "fsmon-test/busybox:local"}},
		{"podman", "var/lib/containers/storage/overlay-containers/containers.json", podmanContainers, Meta{Name: "pweb1", Image: "localhost/fsmon-test/busybox:local"}},
		{"containerd", "run/containerd/io.containerd.runtime.v2.task/k8s.io/" + id + "/config.json", containerdCRI,
			Meta{Name: "app", Image: "docker.io/fsmon-test/busybox:local", Pod: &Pod{Namespace: "prod", Name: "api-7d9f", UID: "0c1d-22"}}},
		{"cri-o", "run/containers/storage/overlay-containers/" + id + "/userdata/config.json", crioOCI,
			Meta{Name: "app", Image: "registry/app:2", Pod: &Pod{Namespace: "batch", Name: "job-1", UID: "9f-1"}}},
	} {
		root := t.TempDir()
		p := filepath.Join(root, tc.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		s := StateFiles{Root: root}
		m, ok := s.Lookup(context.Background(), RuntimeUnknown, id)
		if !ok || !reflect.DeepEqual(m, tc.want) {
			t.Errorf("%s: got %+v %v, want %+v", tc.name, m, ok, tc.want)
		}
		if m, ok := s.Lookup(context.Background(), RuntimeUnknown, strings.Repeat("e", 64)); ok {
			t.Errorf("%s: another id found %+v", tc.name, m)
		}
		if m, ok := (StateFiles{Root: filepath.Join(root, "var")}).Lookup(context.Background(), RuntimeUnknown, id); ok {
			t.Errorf("%s: found below another root: %+v", tc.name, m)
		}
	}
	// An id that is not 64 hex digits is never part of a path, even
	// where a file of that name exists.
	root := t.TempDir()
	for _, bad := range []string{"abc", "../containers/abc", strings.ToUpper(id)} {
		p := filepath.Join(root, "var/lib/docker/containers", bad, "config.v2.json")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(dockerState), 0o644); err != nil {
			t.Fatal(err)
		}
		if m, ok := (StateFiles{Root: root}).Lookup(context.Background(), RuntimeUnknown, bad); ok {
			t.Errorf("id %q looked up: %+v", bad, m)
		}
	}
}

// sourceFunc is a Source made of a function.
type sourceFunc func(id string) (Meta, bool)

func (f sourceFunc) Lookup(_ context.Context, _ Runtime, id string) (Meta, bool) { return f(id) }

func TestSourcesFirstWins(t *testing.T) {
	none := sourceFunc(func(string) (Meta, bool) { return Meta{}, false })
	a := sourceFunc(func(string) (Meta, bool) { return Meta{Name: "a"}, true })
	b := sourceFunc(func(string) (Meta, bool) { return Meta{Name: "b"}, true })
	if m, ok := (Sources{none, a, b}).Lookup(context.Background(), "", id); !ok || m.Name != "a" {
		t.Errorf("%+v %v", m, ok)
	}
	if _, ok := (Sources{none}).Lookup(context.Background(), "", id); ok {
		t.Error("nobody knows it")
	}
}

func FuzzParseState(f *testing.F) {
	for _, s := range []string{dockerState, podmanContainers, podmanOCI, containerdCRI, crioOCI} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, ok := ParseState(b, id)
		if ok != (m.Name != "" || m.Image != "" || m.Pod != nil) {
			t.Fatalf("ok %v for %+v", ok, m)
		}
	})
}
