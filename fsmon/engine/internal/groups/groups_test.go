package groups

import (
	"reflect"
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
