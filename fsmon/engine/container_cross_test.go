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

// The rules are the file's, whoever opens it: a host process that opens a
// container's file meets the container profile's rules, and a container
// process that opens a host file (through a bind mount) the host's. The
// opener's group only names the event: its container, and the path and
// executable as the opener sees them.

// TestHostProcessMeetsTheContainersRules: a host process that opens a
// file in a container's root, by the host's path of the root or through
// /proc/PID/root, is judged by the container's profile; names in its
// allow list match whoever runs, executable paths name the container's
// files. Its deny names the host process, its change the container.
func TestHostProcessMeetsTheContainersRules(t *testing.T) {
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

	mustDeny(t, cmd(t, "cat", shadow))
	ev := h.rec.waitFor(t, "deny of the host's cat", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Process.ExecutablePath == "/usr/bin/cat" && ev.Filter == "shadow"
	})
	// Named as the opener sees it: a host process, the host's path.
	if ev.Profile != "inner" || ev.Container != (fsmon.Container{}) || ev.Path != shadow {
		t.Errorf("deny of a host process: %+v", ev)
	}
	viaProc := fmt.Sprintf("/proc/%d/root/etc/shadow", c.pid)
	mustDeny(t, cmd(t, "cat", viaProc))
	// The name in the allow list matches a host process too.
	mustAllow(t, cmd(t, "head", shadow))

	// /bin/busybox of the allow list is the container's: the host's own
	// busybox is another file, the container's binary run from the host
	// is that file.
	mustDeny(t, cmd(t, hostBusybox, "cat", tool))
	mustAllow(t, cmd(t, filepath.Join(root, "bin", "busybox"), "cat", tool))
	mustAllow(t, c.exec(t, "cat", "/etc/tool"))
	mustDeny(t, cmd(t, "cat", tool))
	h.rec.waitFor(t, "deny of the host's cat of the tool's file", func(ev *fsmon.Event) bool {
		return ev.Kind == fsmon.KindDenied && ev.Process.ExecutablePath == "/usr/bin/cat" && ev.Filter == "tool" && ev.Container.ID == ""
	})

	// A change names the file's group: the container, the inner path.
	mustAllow(t, sh(t, "echo from-host >> "+motd))
	ev = h.rec.waitFor(t, "change of the container's file from the host", func(ev *fsmon.Event) bool {
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
