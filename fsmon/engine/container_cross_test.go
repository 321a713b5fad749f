package engine

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// The host's rules are the file's, whoever opens it: a container process
// that opens a host file (through a bind mount) meets the host's rules.
// A container's rules judge only that container's processes: a host
// process, or another container's, that opens a container's file meets
// the host's rules only (none here: allowed). The opener's group names
// the event: its container, and the path and executable as the opener
// sees them.

// TestContainerRulesJudgeOnlyItsOwn: a host process that opens a file in
// a container's root, by the host's path of the root or through
// /proc/PID/root, is not judged by the container's profile, whatever the
// names in its allow list; the container's own processes are. A change
// of the file still names the container.
func TestContainerRulesJudgeOnlyItsOwn(t *testing.T) {
	testroot.Require(t)
	hostBusybox := testroot.RequireCommand(t, "busybox")
	root := busyboxRoot(t)
	shadow := filepath.Join(root, "etc", "shadow")
	tool := filepath.Join(root, "etc", "tool")
	writeFile(t, shadow, "container secret\n")
	writeFile(t, tool, "tool config\n")
	motd := filepath.Join(root, "etc", "motd")
	writeFile(t, motd, "")
	h := startScanning(t, scanForTests, `
profiles:
  - name: inner
    containers: {name: '{run}-cross-*'}
    mode: protect
    filters:
      - name: shadow
        path: /etc/shadow
        behavior: block
        allow: [head]
      - name: tool
        path: /etc/tool
        behavior: block
        allow: [/bin/busybox]
      - name: motd
        path: /etc/motd
`)
	c := startContainer(t, root, "cross-1", cgroupV2Docker)
	waitGroup(t, h, c, true)

	// The container's own processes are judged.
	mustDeny(t, c.exec(t, "cat", "/etc/shadow"))
	mustAllow(t, c.exec(t, "head", "/etc/shadow"))
	mustAllow(t, c.exec(t, "cat", "/etc/tool"))
	// Host processes are not, by any path.
	mustAllow(t, cmd(t, "cat", shadow))
	mustAllow(t, cmd(t, "cat", fmt.Sprintf("/proc/%d/root/etc/shadow", c.pid)))
	mustAllow(t, cmd(t, hostBusybox, "cat", tool))
	mustAllow(t, cmd(t, "cat", tool))
	// The container's deny came, the host's opens made none.
	h.rec.waitFor(t, "deny in the container", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Container.ID == c.id && ev.Filter == "shadow"
	})
	for _, ev := range h.rec.all() {
		if ev.Kind == fsmon.KindDenied && ev.Container.ID == "" {
			t.Errorf("a host process judged by a container's rules: %+v", ev)
		}
	}

	// A change names the file's group: the container, the inner path.
	mustAllow(t, sh(t, "echo from-host >> "+motd))
	ev := h.rec.waitFor(t, "change of the container's file from the host", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindChange && ev.Op == fsmon.OpWrite && ev.Filter == "motd"
	})
	if ev.Profile != "inner" || ev.Container.ID != c.id || ev.Path != "/etc/motd" {
		t.Errorf("change by a host process: %+v", ev)
	}
}

// TestContainerProcessMeetsTheHostsRules: a container process that opens
// a host file through a bind mount is judged by the host's profile; the
// executable its allow list names is the host's, not the container's of
// the same path. Denies name the container and the path inside it;
// changes name the file's group, the host, and the host's path.
func TestContainerProcessMeetsTheHostsRules(t *testing.T) {
	testroot.Require(t)
	hostDir := t.TempDir()
	secret := filepath.Join(hostDir, "secret")
	logf := filepath.Join(hostDir, "log")
	writeFile(t, secret, "host secret\n")
	writeFile(t, logf, "")
	root := busyboxRoot(t)
	// The container has a head at the path the host's allow list names.
	if err := os.MkdirAll(filepath.Join(root, "usr", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/bin/busybox", filepath.Join(root, "usr", "bin", "head")); err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(root, "hostdir")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "--bind", hostDir, mnt).CombinedOutput(); err != nil {
		t.Fatalf("bind mount: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	h := startScanning(t, scanForTests, fmt.Sprintf(`
profiles:
  - name: host
    host: true
    mode: protect
    filters:
      - name: secret
        path: %s
        behavior: block
        allow: [/usr/bin/head]
      - name: log
        path: %s
  - name: inner
    containers: {name: '{run}-bind-*'}
    filters:
      - path: /etc/passwd
`, secret, logf))
	c := startContainer(t, root, "bind-1", cgroupV2Docker)
	waitGroup(t, h, c, true)

	mustDeny(t, c.exec(t, "cat", "/hostdir/secret"))
	ev := h.rec.waitFor(t, "denied from the container", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Container.ID == c.id && ev.Process.ExecutableName == "cat"
	})
	if ev.Profile != "host" || ev.Filter != "secret" || ev.Container.Name != c.name || ev.Path != "/hostdir/secret" ||
		ev.Process.ExecutablePath != "/bin/busybox" {
		t.Errorf("deny of a container process: %+v", ev)
	}
	// The container's /usr/bin/head is not the host's.
	mustDeny(t, c.exec(t, "/usr/bin/head", "/hostdir/secret"))
	mustAllow(t, cmd(t, "/usr/bin/head", secret))
	mustDeny(t, cmd(t, "cat", secret))

	mustAllow(t, c.exec(t, "sh", "-c", "echo from-container >> /hostdir/log"))
	ev = h.rec.waitFor(t, "change of the host's file from the container", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindChange && ev.Op == fsmon.OpWrite && ev.Filter == "log"
	})
	if ev.Profile != "host" || ev.Container != (fsmon.Container{}) || ev.Path != logf {
		t.Errorf("change by a container process: %+v", ev)
	}
}

// TestContainerSymlinkIntoHostVolume: a container replaces its protected
// path with a symlink into a volume of host files (its root owns every
// path inside it). Its rules then cover host files, new ones too, but
// judge only its own processes: the host's opens, and another
// container's with the same volume, are unaffected, while the host's
// own rule on a file of the volume still denies everyone.
func TestContainerSymlinkIntoHostVolume(t *testing.T) {
	testroot.Require(t)
	hostDir := t.TempDir()
	data := filepath.Join(hostDir, "data")
	hsecret := filepath.Join(hostDir, "hsecret")
	writeFile(t, data, "host data\n")
	writeFile(t, hsecret, "host secret\n")
	volume := func(root string) {
		mnt := filepath.Join(root, "vol")
		if err := os.MkdirAll(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "--bind", hostDir, mnt).CombinedOutput(); err != nil {
			t.Fatalf("bind mount: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	}
	root := busyboxRoot(t)
	volume(root)
	// The container's /prot leads into the volume.
	if err := os.Symlink("/vol", filepath.Join(root, "prot")); err != nil {
		t.Fatal(err)
	}
	otherRoot := busyboxRoot(t)
	volume(otherRoot)
	h := startScanning(t, scanForTests, fmt.Sprintf(`
profiles:
  - name: host
    host: true
    mode: protect
    filters:
      - name: hsecret
        path: %s
        behavior: block
        allow: [head]
  - name: inner
    containers: {name: '{run}-vol-1'}
    mode: protect
    filters:
      - name: prot
        path: /prot
        recursive: true
        behavior: block
        allow: [head]
  - name: other
    containers: {name: '{run}-vol-2'}
    filters:
      - path: /etc/passwd
`, hsecret))
	c := startContainer(t, root, "vol-1", cgroupV2Docker)
	o := startContainer(t, otherRoot, "vol-2", cgroupV2Docker)
	waitGroup(t, h, c, true)
	waitGroup(t, h, o, true)
	newFile := filepath.Join(hostDir, "new")
	// Made by a process of the host's (not the engine's own, whose opens
	// make no events): its first open marks it.
	mustAllow(t, sh(t, "echo made later > "+newFile))

	// The container meets its own rules on the host's files.
	mustDeny(t, c.exec(t, "cat", "/prot/data"))
	mustDeny(t, c.exec(t, "cat", "/vol/new"))
	// The host and the other container do not.
	mustAllow(t, cmd(t, "cat", data))
	mustAllow(t, cmd(t, "cat", newFile))
	mustAllow(t, o.exec(t, "cat", "/vol/data"))
	mustAllow(t, o.exec(t, "cat", "/vol/new"))
	// The host's rule on a file of the volume holds for all three.
	mustDeny(t, cmd(t, "cat", hsecret))
	mustDeny(t, c.exec(t, "cat", "/vol/hsecret"))
	mustDeny(t, o.exec(t, "cat", "/vol/hsecret"))
	h.rec.waitFor(t, "host's deny of the other container", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Container.ID == o.id && ev.Profile == "host"
	})
	for _, ev := range h.rec.all() {
		if ev.Kind == fsmon.KindDenied && ev.Profile == "inner" && ev.Container.ID != c.id {
			t.Errorf("the container's rule judged another's process: %+v", ev)
		}
	}
}
