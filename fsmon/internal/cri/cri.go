// Package cri asks a Kubernetes container runtime (containerd's CRI
// plugin, CRI-O) through the CRI API (k8s.io/cri-api, as kubelet, Falco
// and Tetragon do) who a container is: its name in the pod spec, its
// image and its pod (namespace, name, uid, labels). The state files a
// runtime leaves hold no pod labels; the API does.
package cri

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/container"
)

// DefaultSockets are where containerd and CRI-O listen.
var DefaultSockets = []string{"/run/containerd/containerd.sock", "/run/crio/crio.sock"}

// Timeout bounds one look-up: discovery waits for it.
const Timeout = 2 * time.Second

// Client is the CRI runtime service behind one socket. It connects on
// first use and again after the runtime restarts (gRPC's channel does).
type Client struct {
	// Socket is the socket's path as the daemon reaches it (below the
	// host's root).
	Socket string

	mu   sync.Mutex
	conn *grpc.ClientConn
	rs   runtimeapi.RuntimeServiceClient
}

// New returns a client of the runtime at socket; nothing connects yet.
func New(socket string) *Client { return &Client{Socket: socket} }

func (c *Client) service() (runtimeapi.RuntimeServiceClient, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rs != nil {
		return c.rs, nil
	}
	conn, err := grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("CRI socket %s: %w", c.Socket, err)
	}
	c.conn, c.rs = conn, runtimeapi.NewRuntimeServiceClient(conn)
	return c.rs, nil
}

// Close closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		return nil
	}
	err := c.conn.Close()
	c.conn, c.rs = nil, nil
	return err
}

// ErrUnknown says the runtime knows no container or sandbox of the id.
var ErrUnknown = errors.New("cri: unknown container")

// Lookup implements container.Source: a runtime that does not answer
// (no socket: a node without Kubernetes) knows nothing.
func (c *Client) Lookup(ctx context.Context, rt container.Runtime, id string) (container.Meta, bool) {
	switch rt {
	case container.RuntimeDocker, container.RuntimePodman:
		return container.Meta{}, false // not a CRI runtime's
	}
	if _, err := os.Stat(c.Socket); err != nil {
		return container.Meta{}, false
	}
	m, err := c.Meta(ctx, id)
	return m, err == nil
}

// Meta asks the runtime about id: a container of a pod, or a pod's
// sandbox (its pause container), which has the pod's identity and no
// container name.
func (c *Client) Meta(ctx context.Context, id string) (container.Meta, error) {
	rs, err := c.service()
	if err != nil {
		return container.Meta{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	cs, err := rs.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{Id: id}})
	if err != nil {
		return container.Meta{}, fmt.Errorf("CRI ListContainers %s: %w", c.Socket, err)
	}
	var m container.Meta
	sandbox := id
	if ctr := exact(cs.GetContainers(), id); ctr != nil {
		m.Name = ctr.GetMetadata().GetName()
		m.Image = imageName(ctx, rs, ctr)
		sandbox = ctr.GetPodSandboxId()
	}
	ps, err := rs.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sandbox})
	switch {
	case status.Code(err) == codes.NotFound && m.Name == "":
		return container.Meta{}, ErrUnknown
	case err != nil && m.Name == "":
		return container.Meta{}, fmt.Errorf("CRI PodSandboxStatus %s: %w", c.Socket, err)
	case err == nil:
		s := ps.GetStatus()
		md := s.GetMetadata()
		m.Pod = &container.Pod{Namespace: md.GetNamespace(), Name: md.GetName(), UID: md.GetUid(), Labels: s.GetLabels()}
	}
	return m, nil
}

// exact picks the container of the id: a filter on the id may also
// match by prefix.
func exact(cs []*runtimeapi.Container, id string) *runtimeapi.Container {
	for _, c := range cs {
		if c.GetId() == id {
			return c
		}
	}
	return nil
}

// imageName is the image as the pod spec names it. ListContainers gives
// the image the runtime resolved (often a sha256 id); the container's
// status keeps the name it was created with.
func imageName(ctx context.Context, rs runtimeapi.RuntimeServiceClient, c *runtimeapi.Container) string {
	if st, err := rs.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.GetId()}); err == nil {
		if n := st.GetStatus().GetImage().GetImage(); n != "" && !strings.HasPrefix(n, "sha256:") {
			return n
		}
	}
	if n := c.GetImage().GetImage(); n != "" && !strings.HasPrefix(n, "sha256:") {
		return n
	}
	return c.GetImage().GetUserSpecifiedImage()
}

var _ container.Source = (*Client)(nil)
