package groups

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/container"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

func TestInside(t *testing.T) {
	chroot := &Group{Name: "c", ContainerID: "abc", Prefix: "/var/lib/c/root"}
	for in, want := range map[string]string{
		"/var/lib/c/root":           "/",
		"/var/lib/c/root/etc/hosts": "/etc/hosts",
		"/var/lib/c/rootfs/x":       "/var/lib/c/rootfs/x", // not below the prefix
		"/etc/hosts":                "/etc/hosts",
	} {
		if got := chroot.Inside(in); got != want {
			t.Errorf("Inside(%q) = %q, want %q", in, got, want)
		}
	}
	var none *Group
	if none.Inside("/x") != "/x" || (&Group{}).Inside("/x") != "/x" {
		t.Error("no prefix changes the path")
	}
}

func TestTargetAndContainer(t *testing.T) {
	host := &Group{Name: "host"}
	c := &Group{Name: "web", ContainerID: "abc", Image: "nginx:1"}
	labels := map[string]string{"app": "api"}
	pod := &Group{Name: "app", SpecName: "app", ContainerID: "def", Image: "registry/app:2",
		Pod: &container.Pod{Namespace: "prod", Name: "api-1", UID: "u-1", Labels: labels}}
	sandbox := &Group{Name: "def000000000", ContainerID: "def0000000000", Pod: pod.Pod}
	if !host.IsHost() || c.IsHost() {
		t.Fatal("IsHost")
	}
	for _, tc := range []struct {
		g    *Group
		want policy.Target
	}{
		{host, policy.Target{Host: true}},
		{c, policy.Target{Name: "web", ID: "abc", Image: "nginx:1"}},
		{pod, policy.Target{Name: "app", ID: "def", Image: "registry/app:2", Namespace: "prod", Pod: "api-1", Labels: labels}},
	} {
		if got := tc.g.Target(); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("target %+v, want %+v", got, tc.want)
		}
	}
	for _, tc := range []struct {
		g    *Group
		want fsmon.Container
	}{
		{host, fsmon.Container{}},
		{c, fsmon.Container{ID: "abc", Name: "web", Image: "nginx:1"}},
		{pod, fsmon.Container{ID: "def", Name: "app", Image: "registry/app:2", Pod: fsmon.Pod{Namespace: "prod", Name: "api-1", UID: "u-1", ContainerName: "app"}}},
		{sandbox, fsmon.Container{ID: "def0000000000", Name: "def000000000", Pod: fsmon.Pod{Namespace: "prod", Name: "api-1", UID: "u-1"}}},
	} {
		if got := tc.g.Container(); got != tc.want {
			t.Errorf("container %+v, want %+v", got, tc.want)
		}
	}
	var none *Group
	if none.Container() != (fsmon.Container{}) {
		t.Fatal("nil group names a container")
	}
}

// TestHostFiles: the host's files are at / when the daemon shares PID
// 1's mount namespace or cannot read it, and below PID 1's root only
// when the daemon is in a mount namespace of its own. A proc root of
// links stands in for /proc.
func TestHostFiles(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		name         string
		init, daemon string // the links' targets; "" for none
		want         string // "" for the proc root's 1/root
	}{
		{"same namespace", "mnt:[4026531841]", "mnt:[4026531841]", "/"},
		{"a namespace of its own", "mnt:[4026531841]", "mnt:[4026532999]", ""},
		{"PID 1's unreadable", "", "mnt:[4026532999]", "/"},
	} {
		root := t.TempDir()
		for pid, target := range map[string]string{"1": tc.init, self: tc.daemon} {
			if target == "" {
				continue
			}
			if err := os.MkdirAll(filepath.Join(root, pid, "ns"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, filepath.Join(root, pid, "ns", "mnt")); err != nil {
				t.Fatal(err)
			}
		}
		want := tc.want
		if want == "" {
			want = root + "/1/root"
		}
		if got := HostFiles(root); got != want {
			t.Errorf("%s: HostFiles = %q, want %q", tc.name, got, want)
		}
	}
}
