package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// systemdImage is a container image whose PID 1 is this machine's own
// systemd (the test machines boot without one): the host's /usr is
// bound in read-only under an overlay, /etc and the dpkg database are
// copies. Made once per machine from what is installed here.
const systemdImage = "fsmon-test/systemd:local"

// The capabilities of the systemd container: all that Docker knows but
// CAP_SYS_RESOURCE, which the test machines' root lacks (so --privileged
// fails there).
var systemdContainerCaps = []string{"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ"}

func makeSystemdImage(t *testing.T, docker string) {
	t.Helper()
	if _, err := runErr(docker, "image", "inspect", systemdImage); err == nil {
		return
	}
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		testroot.Unavailable(t, "no systemd installed on this machine: %v", err)
	}
	busybox := testroot.RequireCommand(t, "busybox")
	root := filepath.Join(t.TempDir(), "root")
	for _, d := range []string{"usr", "hostusr", "proc", "sys", "dev", "run", "tmp", "var/lib", "var/log", "var/tmp", "var/cache", "root", "ov"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if err := os.Symlink("usr/"+l, filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "cp", "-a", "/etc", filepath.Join(root, "etc"))
	run(t, "cp", "-a", "/var/lib/dpkg", filepath.Join(root, "var/lib/dpkg"))
	run(t, "cp", busybox, filepath.Join(root, "busybox"))
	for name, text := range map[string]string{
		"etc/machine-id": "",
		"etc/fstab":      "",
		// /usr is the host's, read-only, under a writable overlay, so
		// that dpkg can install into it.
		"init": "#!/busybox sh\n/busybox mount -t tmpfs tmpfs /ov && /busybox mkdir -p /ov/u /ov/w && " +
			"/busybox mount -t overlay overlay -o lowerdir=/hostusr,upperdir=/ov/u,workdir=/ov/w /usr || exit 1\nexec /lib/systemd/systemd\n",
	} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tarCmd := exec.Command("tar", "-C", root, "-c", ".")
	imp := exec.Command(docker, "import", "--change", `CMD ["/init"]`, "-", systemdImage)
	pipe, err := tarCmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	imp.Stdin = pipe
	if err := tarCmd.Start(); err != nil {
		t.Fatal(err)
	}
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("docker import %s: %v\n%s", systemdImage, err, out)
	}
	if err := tarCmd.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestDebUnderSystemd installs the package on a machine where systemd is
// PID 1 (this machine's systemd in a container): postinst enables and
// starts the unit, the daemon becomes ready with the default
// configuration under every hardening option of the unit, and, with a
// protect configuration and systemctl reload, denies an open of a file on
// the host's file system. Purge stops and removes it.
func TestDebUnderSystemd(t *testing.T) {
	testroot.Require(t)
	deb := testroot.EnvPath(t, "FSMON_DEB", "make test builds it with make deb")
	docker := testroot.RequireCommand(t, "docker")
	if _, err := runErr(docker, "version"); err != nil {
		testroot.Unavailable(t, "Docker is not running (make test starts it)")
	}
	makeSystemdImage(t, docker)

	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "secret"), []byte("top secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "-d", "--network=none", "-e", "container=docker",
		"--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
		"-v", "/usr:/hostusr:ro", "-v", data + ":/data",
		// A cgroup file system root of its own: systemd makes its
		// controller links there and remounts it read-only, which on a
		// bind of the host's /sys/fs/cgroup would be done to the host's
		// (seen: podman then failed on the machine). Only the hierarchies
		// it runs its units in are the host's (below the container's
		// own cgroup).
		"--tmpfs", "/sys/fs/cgroup",
		"-v", "/sys/fs/cgroup/systemd:/sys/fs/cgroup/systemd:rw",
		"--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp"}
	for _, c := range systemdContainerCaps {
		args = append(args, "--cap-add="+c)
	}
	id := strings.TrimSpace(run(t, docker, append(args, systemdImage)...))
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := runErr(docker, "exec", id, "journalctl", "-u", "fsmon_exporter", "--no-pager", "-o", "cat", "-n", "40")
			t.Logf("journal of fsmon_exporter:\n%s", out)
		}
		_, _ = runErr(docker, "rm", "-f", id)
	})
	sh := func(script string) (string, error) { return runErr(docker, "exec", id, "sh", "-c", script) }
	poll(t, 120*time.Second, "systemd in the container is up", func() (bool, string) {
		out, _ := sh("systemctl is-system-running")
		s := strings.TrimSpace(out)
		return s == "running" || s == "degraded", s
	})

	run(t, docker, "cp", deb, id+":/root/fsmon.deb")
	if out, err := sh("dpkg -i /root/fsmon.deb"); err != nil {
		t.Fatalf("dpkg -i under systemd: %v\n%s", err, out)
	}
	ready := func(what string) {
		t.Helper()
		poll(t, 60*time.Second, what, func() (bool, string) {
			active, _ := sh("systemctl is-active fsmon_exporter")
			code, _ := sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9717/-/ready")
			return strings.TrimSpace(active) == "active" && code == "200", fmt.Sprintf("is-active %q, /-/ready %q", strings.TrimSpace(active), code)
		})
	}
	ready("the service started by postinst is active and ready, with the default configuration")

	// The hardening is in force: the unit's bounding set, no new
	// privileges, a mount namespace of its own (ProtectSystem=strict).
	status, err := sh(`p=$(systemctl show -p MainPID --value fsmon_exporter); grep -E '^(CapBnd|NoNewPrivs)' /proc/$p/status; [ "$(readlink /proc/$p/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ] && echo own-mount-ns`)
	if err != nil {
		t.Fatalf("reading the service's status: %v\n%s", err, status)
	}
	for _, want := range []string{"CapBnd:\t0000000000ac0004", "NoNewPrivs:\t1", "own-mount-ns"} {
		if !strings.Contains(status, want) {
			t.Errorf("the service's process lacks %q (SYS_ADMIN, SYS_PTRACE, DAC_READ_SEARCH, SYS_NICE, SYS_CHROOT; NoNewPrivileges; ProtectSystem):\n%s", want, status)
		}
	}

	// A protect configuration, reloaded as the runbook says: the open is denied.
	cfg := "mode: protect\nprofiles:\n  - name: host\n    host: true\n    filters:\n      - {name: secret, path: /data/secret, behavior: block, allow: [/nonexistent]}\n"
	if out, err := sh("cat > " + configPath + " <<'EOF'\n" + cfg + "EOF\nsystemctl reload fsmon_exporter"); err != nil {
		t.Fatalf("writing the configuration and reloading: %v\n%s", err, out)
	}
	poll(t, 60*time.Second, "cat /data/secret is denied by the service", func() (bool, string) {
		out, err := sh("cat /data/secret")
		return err != nil && strings.Contains(out, "not permitted"), fmt.Sprintf("%v %q", err, out)
	})
	ready("the service is ready with the protect configuration")

	if out, err := sh("dpkg --purge fsmon-exporter"); err != nil {
		t.Fatalf("dpkg --purge under systemd: %v\n%s", err, out)
	}
	out, _ := sh("systemctl is-active fsmon_exporter; ls /lib/systemd/system/fsmon_exporter.service /etc/fsmon_exporter /var/lib/fsmon_exporter 2>&1")
	if !strings.HasPrefix(out, "inactive") || strings.Count(out, "No such file") != 3 {
		t.Errorf("after purge: %s", out)
	}
	if c, err := sh("cat /data/secret"); err != nil {
		t.Errorf("after purge the file is still denied: %v %s", err, c)
	}
}
