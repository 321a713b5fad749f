package groups

import (
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
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
	if !host.IsHost() || c.IsHost() {
		t.Fatal("IsHost")
	}
	if host.Target() != (policy.Target{Host: true}) || c.Target() != (policy.Target{Name: "web", ID: "abc", Image: "nginx:1"}) {
		t.Fatalf("targets %+v %+v", host.Target(), c.Target())
	}
	if host.Container() != (fsmon.Container{}) || c.Container() != (fsmon.Container{ID: "abc", Name: "web"}) {
		t.Fatalf("containers %+v %+v", host.Container(), c.Container())
	}
	var none *Group
	if none.Container() != (fsmon.Container{}) {
		t.Fatal("nil group names a container")
	}
}
