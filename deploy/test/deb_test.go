package test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

const debPackage = "fsmon-exporter"

// TestDeb installs the package `make deb` built with dpkg -i on this
// machine, checks that its default configuration passes --config.check
// and starts the daemon, that its unit passes systemd-analyze verify,
// then removes and purges it and checks that nothing of it is left.
func TestDeb(t *testing.T) {
	testroot.Require(t)
	deb := testroot.EnvPath(t, "FSMON_DEB", "make test builds it with make deb")
	dpkg := testroot.RequireCommand(t, "dpkg")
	// One install at a time on this machine (runs of make test in
	// other trees).
	lock, err := os.OpenFile("/run/fsmon-test-deb.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	installed := func() bool {
		out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", debPackage).Output()
		return err == nil && strings.Contains(string(out), "installed") && !strings.Contains(string(out), "not-installed") && !strings.Contains(string(out), "config-files")
	}
	if installed() {
		t.Fatalf("%s is installed on this machine already: the test would remove it", debPackage)
	}
	run(t, dpkg, "--purge", debPackage) // leftover configuration files of an earlier run
	t.Cleanup(func() { _, _ = runErr(dpkg, "--purge", debPackage) })

	run(t, dpkg, "-i", deb)
	if !installed() {
		t.Fatalf("dpkg -i %s: %s is not installed", deb, debPackage)
	}
	files := strings.Fields(run(t, "dpkg-query", "-L", debPackage))
	for _, want := range []string{"/usr/bin/fsmon_exporter", configPath, "/etc/default/fsmon_exporter", "/lib/systemd/system/fsmon_exporter.service", "/usr/share/doc/fsmon-exporter/README.md", "/usr/share/doc/fsmon-exporter/docs/runbook.md", "/usr/share/doc/fsmon-exporter/alerts/fsmon.rules.yml"} {
		if !slices.Contains(files, want) {
			t.Errorf("the package does not install %s", want)
		}
	}
	conffiles := run(t, "dpkg-query", "-W", "-f=${Conffiles}", debPackage)
	for _, want := range []string{configPath, "/etc/default/fsmon_exporter"} {
		if !strings.Contains(conffiles, want+" ") {
			t.Errorf("%s is not a conffile (an upgrade would overwrite the operator's edits): %q", want, conffiles)
		}
	}
	if got, want := string(readFileAbs(t, configPath)), string(readFile(t, "deploy", "config.yml")); got != want {
		t.Errorf("the installed %s is not deploy/config.yml", configPath)
	}

	// The default configuration passes the daemon's check...
	if out, err := runErr("/usr/bin/fsmon_exporter", "--config.check", "--config.file="+configPath); err != nil {
		t.Errorf("fsmon_exporter --config.check --config.file=%s: %v\n%s", configPath, err, out)
	}
	// ...and the unit's command line starts the daemon with it.
	unit := string(readFileAbs(t, "/lib/systemd/system/fsmon_exporter.service"))
	exe := unitValue(t, unit, "ExecStart")
	argv := strings.Fields(strings.ReplaceAll(exe, "$FSMON_EXPORTER_ARGS", ""))
	if argv[0] != "/usr/bin/fsmon_exporter" || !slices.Contains(argv, "--config.file="+configPath) {
		t.Errorf("the unit's ExecStart %q: want /usr/bin/fsmon_exporter --config.file=%s", exe, configPath)
	}
	startInstalled(t, argv)

	// systemd's own check of the unit: exit 0 and nothing said (a bad
	// option value is only a warning on stderr).
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		out, err := exec.Command(sa, "verify", "/lib/systemd/system/fsmon_exporter.service").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("systemd-analyze verify fsmon_exporter.service: %v\n%s", err, out)
		}
	} else {
		testroot.Unavailable(t, "systemd-analyze: %v", err)
	}

	// Remove: the program, unit and docs go, the configuration stays.
	if err := os.MkdirAll("/var/lib/fsmon_exporter", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/var/lib/fsmon_exporter/allow.state", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, dpkg, "-r", debPackage)
	for _, f := range files {
		if strings.HasPrefix(f, "/etc/") {
			continue
		}
		if fi, err := os.Stat(f); err == nil && !fi.IsDir() {
			t.Errorf("dpkg -r left %s", f)
		}
	}
	if _, err := os.Stat(configPath); err != nil {
		t.Errorf("dpkg -r removed the configuration %s (only purge should): %v", configPath, err)
	}
	// Purge: the configuration and the daemon's state go too.
	run(t, dpkg, "--purge", debPackage)
	for _, f := range append(files, "/var/lib/fsmon_exporter") {
		fi, err := os.Stat(f)
		if err != nil {
			continue
		}
		if !fi.IsDir() || ownDir(f) {
			t.Errorf("dpkg --purge left %s", f)
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", debPackage).CombinedOutput(); err == nil {
		t.Errorf("dpkg still knows %s after purge: %s", debPackage, out)
	}
}

// ownDir reports whether dir is one of the package's own directories,
// which purge must remove (shared ones like /usr/share/doc stay).
func ownDir(dir string) bool {
	for _, d := range []string{"/etc/fsmon_exporter", "/usr/share/doc/fsmon-exporter", "/var/lib/fsmon_exporter"} {
		if dir == d || strings.HasPrefix(dir, d+"/") {
			return true
		}
	}
	return false
}

// startInstalled runs the installed daemon with the unit's arguments (on
// a free port, the state in a temporary directory) until it is ready,
// then stops it with the unit's KillSignal.
func startInstalled(t *testing.T, argv []string) {
	t.Helper()
	addr := testroot.FreeAddr(t)
	cmd := exec.Command(argv[0], append(argv[1:], "--web.listen-address="+addr, "--state.dir="+t.TempDir(), "--no-events.stdout")...)
	stderr := &testroot.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("the installed daemon exited with %v on SIGTERM\n%s", err, stderr.String())
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("the installed daemon did not stop on SIGTERM")
		}
	}()
	poll(t, 60*time.Second, "the installed daemon with the default configuration is ready", func() (bool, string) {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("the installed daemon exited: %v\n%s", err, stderr.String())
		default:
		}
		code, body := httpStatus("http://" + addr + "/-/ready")
		return code == 200, body
	})
}

// unitValue is the value of the first KEY= line of a unit.
func unitValue(t *testing.T, unit, key string) string {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(unit))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+"="); ok {
			return v
		}
	}
	t.Fatalf("the unit has no %s=", key)
	return ""
}

func readFileAbs(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Clean(path))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
