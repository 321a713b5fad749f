package cri

import (
	"context"
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/container"
)

// runtime answers the CRI calls Meta makes as containerd and CRI-O do:
// ContainerStatus keeps the image as the pod spec named it,
// PodSandboxStatus knows sandboxes only. Its ListContainers is looser
// than theirs, which filter by id prefix: it matches on 63 digits, so it
// returns more than the container asked for, and the client must take
// the one of its id only (the filter is the runtime's business, the
// identity the daemon's).
type runtime struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	containers []*runtimeapi.Container
	specImage  map[string]string
	sandboxes  map[string]*runtimeapi.PodSandboxStatus
}

func (r *runtime) ListContainers(_ context.Context, req *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	var out []*runtimeapi.Container
	for _, c := range r.containers {
		if id := req.GetFilter().GetId(); strings.HasPrefix(c.Id, id[:min(len(id), 63)]) {
			out = append(out, c)
		}
	}
	return &runtimeapi.ListContainersResponse{Containers: out}, nil
}

func (r *runtime) ContainerStatus(_ context.Context, req *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	img, ok := r.specImage[req.GetContainerId()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such container")
	}
	return &runtimeapi.ContainerStatusResponse{Status: &runtimeapi.ContainerStatus{Id: req.GetContainerId(), Image: &runtimeapi.ImageSpec{Image: img}}}, nil
}

func (r *runtime) PodSandboxStatus(_ context.Context, req *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	s, ok := r.sandboxes[req.GetPodSandboxId()]
	if !ok {
		return nil, status.Error(codes.NotFound, "no such sandbox")
	}
	return &runtimeapi.PodSandboxStatusResponse{Status: s}, nil
}

func serve(t *testing.T, r *runtime) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "cri.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	runtimeapi.RegisterRuntimeServiceServer(s, r)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return sock
}

func TestMeta(t *testing.T) {
	app := strings.Repeat("a", 64)
	twin := app[:63] + "b" // shares all but the last digit: a prefix filter returns both
	sandbox := strings.Repeat("5", 64)
	labels := map[string]string{"app": "api", "io.kubernetes.pod.name": "api-1"}
	r := &runtime{
		containers: []*runtimeapi.Container{
			{Id: twin, PodSandboxId: "other", Metadata: &runtimeapi.ContainerMetadata{Name: "twin"}},
			{Id: app, PodSandboxId: sandbox, Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
				Image: &runtimeapi.ImageSpec{Image: "sha256:4c10ae95"}, ImageRef: "sha256:4c10ae95"},
		},
		specImage: map[string]string{app: "registry/app:2"},
		sandboxes: map[string]*runtimeapi.PodSandboxStatus{sandbox: {
			Id: sandbox, Metadata: &runtimeapi.PodSandboxMetadata{Name: "api-1", Uid: "u-1", Namespace: "prod"}, Labels: labels,
		}},
	}
	c := New(serve(t, r))
	t.Cleanup(func() { c.Close() })
	pod := &container.Pod{Namespace: "prod", Name: "api-1", UID: "u-1", Labels: labels}
	for _, tc := range []struct {
		name, id string
		want     container.Meta
		err      error
	}{
		{"a pod's container", app, container.Meta{Name: "app", Image: "registry/app:2", Pod: pod}, nil},
		{"a pod's sandbox", sandbox, container.Meta{Pod: pod}, nil},
		{"unknown", strings.Repeat("9", 64), container.Meta{}, ErrUnknown},
	} {
		m, err := c.Meta(context.Background(), tc.id)
		if err != tc.err || !reflect.DeepEqual(m, tc.want) {
			t.Errorf("%s: %+v (pod %+v) %v, want %+v (pod %+v) %v", tc.name, m, m.Pod, err, tc.want, tc.want.Pod, tc.err)
		}
	}
	// Lookup: Docker's and podman's containers are not the CRI's; no
	// socket, nothing known.
	if _, ok := c.Lookup(context.Background(), container.RuntimeDocker, app); ok {
		t.Error("a Docker container looked up through the CRI")
	}
	if m, ok := c.Lookup(context.Background(), container.RuntimeKubernetes, app); !ok || m.Name != "app" {
		t.Errorf("kubepods container: %+v %v", m, ok)
	}
	if _, ok := New(filepath.Join(t.TempDir(), "none.sock")).Lookup(context.Background(), container.RuntimeContainerd, app); ok {
		t.Error("known through a socket that is not there")
	}
}
