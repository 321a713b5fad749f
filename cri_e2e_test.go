package main

// End-to-end test of Kubernetes pods through containerd's CRI plugin:
// the test is the kubelet. It makes a pod sandbox (the host's network,
// so no CNI is needed; the local busybox image stands in for the pause
// image, tools/runtimes/containerd.toml) and a container in it with the
// labels, annotations and names kubelet gives them, through the CRI API
// (k8s.io/cri-api), then checks that profiles by namespace, pod and
// labels deny inside it and that events carry the pod's identity.

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

const containerdSocket = "/run/containerd/containerd.sock"

// criImage is the test image as containerd's k8s.io namespace names it.
const criImage = "docker.io/" + testImage

func criClient(t *testing.T) runtimeapi.RuntimeServiceClient {
	t.Helper()
	testroot.Require(t)
	if _, err := os.Stat(containerdSocket); err != nil {
		testroot.Unavailable(t, "no containerd (make test starts it: tools/runtimes/runtimes.sh up): %v", err)
	}
	conn, err := grpc.NewClient("unix://"+containerdSocket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	rs := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := rs.Version(ctx, &runtimeapi.VersionRequest{}); err != nil {
		testroot.Unavailable(t, "containerd's CRI plugin does not answer at %s: %v", containerdSocket, err)
	}
	is := runtimeapi.NewImageServiceClient(conn)
	if st, err := is.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: criImage}}); err != nil || st.GetImage() == nil {
		testroot.Unavailable(t, "containerd (k8s.io) has no %s (tools/runtimes/runtimes.sh up imports it): %v", criImage, err)
	}
	return rs
}

func uuid(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// pod is a pod the test made through the CRI API.
type pod struct {
	namespace, name, uid string
	sandbox, container   string // ids
}

// runPod makes a pod sandbox and one container "app" in it, as kubelet
// does with the cgroupfs driver, and removes them at the end. The
// container writes the files the profiles protect before it sleeps.
func runPod(t *testing.T, rs runtimeapi.RuntimeServiceClient, labels map[string]string) pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p := pod{namespace: runID + "-ns", name: "api-" + runID, uid: uuid(t)}
	podLabels := map[string]string{
		"io.kubernetes.pod.name": p.name, "io.kubernetes.pod.namespace": p.namespace, "io.kubernetes.pod.uid": p.uid,
	}
	for k, v := range labels {
		podLabels[k] = v
	}
	cgroupParent := "/kubepods/besteffort/pod" + p.uid
	logDir := t.TempDir()
	sandboxConfig := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: p.name, Uid: p.uid, Namespace: p.namespace},
		LogDirectory: logDir,
		Labels:       podLabels,
		Annotations: map[string]string{
			"kubernetes.io/config.seen": time.Now().Format(time.RFC3339Nano), "kubernetes.io/config.source": "api",
		},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: cgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
			},
		},
	}
	sb, err := rs.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sandboxConfig})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v", err)
	}
	p.sandbox = sb.GetPodSandboxId()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := rs.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.sandbox}); err != nil {
			t.Errorf("StopPodSandbox: %v", err)
		}
		if _, err := rs.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.sandbox}); err != nil {
			t.Errorf("RemovePodSandbox: %v", err)
		}
		// kubelet makes and removes the pod's cgroups; runc left the
		// parents it made.
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + cgroupParent)
		for _, d := range dirs {
			os.Remove(d)
		}
	})
	cc := &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "app"},
		Image:    &runtimeapi.ImageSpec{Image: criImage},
		Command:  []string{"/bin/sh", "-c", "for f in ns pod labels other; do echo runtime secret > /tmp/$f; done; exec sleep 2147483647"},
		Labels: map[string]string{
			"io.kubernetes.container.name": "app", "io.kubernetes.pod.name": p.name,
			"io.kubernetes.pod.namespace": p.namespace, "io.kubernetes.pod.uid": p.uid,
		},
		Annotations: map[string]string{
			"io.kubernetes.container.hash": "1f2e3d4c", "io.kubernetes.container.restartCount": "0",
			"io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
		},
		LogPath: "app/0.log",
		Linux:   &runtimeapi.LinuxContainerConfig{},
	}
	cr, err := rs.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.sandbox, Config: cc, SandboxConfig: sandboxConfig})
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	p.container = cr.GetContainerId()
	if _, err := rs.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: p.container}); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	// Its files are there before the daemon starts.
	deadline := time.Now().Add(time.Minute)
	for {
		r := execIn(t, rs, p, "cat", "/tmp/other")
		if r.GetExitCode() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the container's files never appeared: %s", r.GetStderr())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// execIn runs a command in the pod's container (ExecSync, as `kubectl
// exec` ends up doing).
func execIn(t *testing.T, rs runtimeapi.RuntimeServiceClient, p pod, cmd ...string) *runtimeapi.ExecSyncResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := rs.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: p.container, Cmd: cmd, Timeout: 20})
	if err != nil {
		t.Fatalf("ExecSync %v: %v", cmd, err)
	}
	return r
}

// criConfig protects one file of the pod's container per selector, and
// one by a label value the pod does not have.
const criConfig = `
profiles:
  - name: by-namespace
    containers: {namespace: '%[1]s'}
    mode: protect
    filters: [{name: f, path: /tmp/ns, behavior: block, allow: [head]}]
  - name: by-pod
    containers: {pod: 'api-*', namespace: '%[1]s'}
    mode: protect
    filters: [{name: f, path: /tmp/pod, behavior: block, allow: [head]}]
  - name: by-labels
    containers: {labels: {app: api, tier: 'back*', fsmon.test/run: '%[2]s'}}
    mode: protect
    filters: [{name: f, path: /tmp/labels, behavior: block, allow: [head]}]
  - name: by-other-label
    containers: {labels: {app: web, fsmon.test/run: '%[2]s'}}
    mode: protect
    filters: [{name: f, path: /tmp/other, behavior: block, allow: [head]}]
`

func TestKubernetesPodThroughCRI(t *testing.T) {
	rs := criClient(t)
	p := runPod(t, rs, map[string]string{"app": "api", "tier": "backend", "fsmon.test/run": runID})
	cfg := filepath.Join(t.TempDir(), "fsmon.yml")
	writeConfig(t, cfg, fmt.Sprintf(criConfig, p.namespace, runID))
	d := startDaemon(t, "--config.file="+cfg, "--containers.scan-interval=100ms", "--containers.cri-socket="+containerdSocket)
	d.waitLog(t, 1, `msg="watching container"`, "container=app", "id="+p.container)

	for _, tc := range []struct{ file, profile string }{
		{"/tmp/ns", "by-namespace"}, {"/tmp/pod", "by-pod"}, {"/tmp/labels", "by-labels"},
	} {
		r := execIn(t, rs, p, "cat", tc.file)
		if r.GetExitCode() == 0 || !strings.Contains(string(r.GetStderr()), "Operation not permitted") {
			t.Errorf("cat %s in the pod: exit %d %q, want EPERM", tc.file, r.GetExitCode(), r.GetStderr())
			continue
		}
		ev := d.event(t, "denied "+tc.file, func(m map[string]any) bool {
			return m["event"] == "denied" && m["file.path"] == tc.file && m["container.id"] == p.container
		})
		want := map[string]any{
			"profile": tc.profile, "container.name": "app", "container.image.name": criImage,
			"k8s.namespace.name": p.namespace, "k8s.pod.name": p.name, "k8s.pod.uid": p.uid, "k8s.container.name": "app",
		}
		for k, v := range want {
			if ev[k] != v {
				t.Errorf("%s: %s = %v, want %v (event %v)", tc.file, k, ev[k], v, ev)
			}
		}
		// The denied counter carries the pod's namespace.
		waitMetric(t, d, fmt.Sprintf(`fsmon_access_denied_total{container="app",filter="f",namespace="%s",profile="%s"}`, p.namespace, tc.profile), "1")
	}
	waitMetric(t, d, `fsmon_profile_groups{profile="by-other-label"}`, "0")
	if r := execIn(t, rs, p, "cat", "/tmp/other"); r.GetExitCode() != 0 {
		t.Errorf("a profile by a label the pod does not have denied: %q", r.GetStderr())
	}
}
