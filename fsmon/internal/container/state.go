package container

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Meta is what a container's runtime says about it. Every field comes
// from the runtime (its state files or its API), none from the
// container.
type Meta struct {
	// Name is the runtime's name of the container (`docker run --name`,
	// podman's); for a pod's container the name in the pod spec.
	Name  string
	Image string
	// Pod is set for the containers of Kubernetes pods.
	Pod *Pod
}

// Pod is the Kubernetes identity of a pod's container.
type Pod struct {
	Namespace, Name, UID string
	// Labels are the pod's labels, as the CRI API gives them (nil when
	// only state files were read: they hold no pod labels).
	Labels map[string]string
}

// A Source tells what one runtime knows of a container id; ok is false
// when it does not know the id.
type Source interface {
	Lookup(ctx context.Context, rt Runtime, id string) (m Meta, ok bool)
}

// Sources asks each source in turn; the first that knows the id wins.
type Sources []Source

// Lookup implements Source.
func (ss Sources) Lookup(ctx context.Context, rt Runtime, id string) (Meta, bool) {
	for _, s := range ss {
		if m, ok := s.Lookup(ctx, rt, id); ok {
			return m, true
		}
	}
	return Meta{}, false
}

// StateFiles reads the runtimes' state files below Root, the host's root
// as a path of the daemon's ("/" when the daemon runs in the host's
// mount namespace).
type StateFiles struct{ Root string }

// A stateFile is where a runtime keeps what it knows of container id,
// and how to read it.
type stateFile struct {
	pattern string // below the host's root, %s for the id; no %s: one file for all
	parse   func(b []byte, id string) (Meta, bool)
}

// stateFiles are the layouts of the runtimes' state, in the order they
// are tried:
//   - Docker: /var/lib/docker/containers/<id>/config.v2.json (Name,
//     Config.Image);
//   - podman: containers/storage's overlay-containers/containers.json
//     (names, metadata.image-name): podman's OCI config.json has no name;
//   - containerd (ctr, nerdctl, CRI) and CRI-O: the OCI bundle's
//     config.json, whose annotations name the container, its image and,
//     for CRI, the pod.
var stateFiles = []stateFile{
	{"var/lib/docker/containers/%s/config.v2.json", parseDocker},
	{"var/lib/containers/storage/overlay-containers/containers.json", parsePodmanContainers},
	{"run/containers/storage/overlay-containers/volatile-containers.json", parsePodmanContainers},
	{"run/containerd/io.containerd.runtime.v2.task/k8s.io/%s/config.json", parseOCI},
	{"run/containerd/io.containerd.runtime.v2.task/moby/%s/config.json", parseOCI},
	{"run/containerd/io.containerd.runtime.v2.task/default/%s/config.json", parseOCI},
	{"run/containers/storage/overlay-containers/%s/userdata/config.json", parseOCI},
	{"var/lib/containers/storage/overlay-containers/%s/userdata/config.json", parseOCI},
}

// maxStateFile bounds what is read of one state file: podman's
// containers.json lists every container of the node.
const maxStateFile = 16 << 20

// Lookup implements Source.
func (s StateFiles) Lookup(_ context.Context, _ Runtime, id string) (Meta, bool) {
	if !validID(id) {
		return Meta{}, false
	}
	for _, f := range stateFiles {
		p := f.pattern
		if strings.Contains(p, "%s") {
			p = fmt.Sprintf(p, id)
		}
		b, err := readCapped(filepath.Join(s.Root, p), maxStateFile)
		if err != nil {
			continue
		}
		if m, ok := f.parse(b, id); ok {
			return m, true
		}
	}
	return Meta{}, false
}

// validID keeps ids that are not 64 hex digits out of file names (the
// cgroup parser finds no other, but Lookup is exported).
func validID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func readCapped(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || st.Size() > max {
		return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", p, max)
	}
	return io.ReadAll(io.LimitReader(f, max))
}

// parseDocker reads Docker's config.v2.json.
func parseDocker(b []byte, _ string) (Meta, bool) {
	var s struct {
		Name   string `json:"Name"`
		Config *struct {
			Image string `json:"Image"`
		} `json:"Config"`
	}
	if err := json.Unmarshal(b, &s); err != nil || s.Config == nil {
		return Meta{}, false
	}
	m := Meta{Name: strings.TrimPrefix(s.Name, "/"), Image: s.Config.Image}
	return m, m.Name != "" || m.Image != ""
}

// parsePodmanContainers finds id in containers/storage's list of
// containers: its first name, and the image name podman keeps in the
// entry's metadata (the entry's own image field is the image's id).
func parsePodmanContainers(b []byte, id string) (Meta, bool) {
	var list []struct {
		ID       string   `json:"id"`
		Names    []string `json:"names"`
		Image    string   `json:"image"`
		Metadata string   `json:"metadata"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return Meta{}, false
	}
	for _, c := range list {
		if c.ID != id {
			continue
		}
		var m Meta
		if len(c.Names) > 0 {
			m.Name = c.Names[0]
		}
		var md struct {
			ImageName string `json:"image-name"`
			Name      string `json:"name"`
		}
		if json.Unmarshal([]byte(c.Metadata), &md) == nil {
			m.Image = md.ImageName
			if m.Name == "" {
				m.Name = md.Name
			}
		}
		return m, m.Name != "" || m.Image != ""
	}
	return Meta{}, false
}

// Annotations of OCI config.json files that name a container, by
// runtime: containerd's CRI plugin (io.kubernetes.cri.*), CRI-O
// (io.kubernetes.*), nerdctl.
var (
	nameAnnotations  = []string{"io.kubernetes.cri.container-name", "io.kubernetes.container.name", "nerdctl/name"}
	imageAnnotations = []string{"io.kubernetes.cri.image-name", "io.kubernetes.cri-o.ImageName", "org.opencontainers.image.ref.name"}
	podAnnotations   = []struct{ namespace, name, uid string }{
		{"io.kubernetes.cri.sandbox-namespace", "io.kubernetes.cri.sandbox-name", "io.kubernetes.cri.sandbox-uid"},
		{"io.kubernetes.pod.namespace", "io.kubernetes.pod.name", "io.kubernetes.pod.uid"},
	}
)

// parseOCI reads the annotations of an OCI bundle's config.json.
func parseOCI(b []byte, _ string) (Meta, bool) {
	var s struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return Meta{}, false
	}
	a := s.Annotations
	var m Meta
	m.Name = first(a, nameAnnotations)
	m.Image = first(a, imageAnnotations)
	for _, k := range podAnnotations {
		if a[k.name] != "" {
			m.Pod = &Pod{Namespace: a[k.namespace], Name: a[k.name], UID: a[k.uid]}
			break
		}
	}
	return m, m.Name != "" || m.Image != "" || m.Pod != nil
}

func first(a map[string]string, keys []string) string {
	for _, k := range keys {
		if v := a[k]; v != "" {
			return v
		}
	}
	return ""
}

// ParseState reads a container's name, image and pod from one state
// file (any of the layouts Lookup reads), for the fuzzer and tests.
func ParseState(b []byte, id string) (Meta, bool) {
	for _, parse := range []func([]byte, string) (Meta, bool){parseDocker, parsePodmanContainers, parseOCI} {
		if m, ok := parse(b, id); ok {
			return m, true
		}
	}
	return Meta{}, false
}
