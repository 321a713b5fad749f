package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// chartCaps is the chart's default capability list: the image is run
// with exactly what the DaemonSet grants.
func chartCaps(t *testing.T) []string {
	t.Helper()
	var caps []string
	for _, c := range loadChart(t).Values["capabilities"].([]any) {
		caps = append(caps, c.(string))
	}
	return caps
}

// imageUnderTest is the image `make image` built ($FSMON_IMAGE), with
// Docker up (tools/runtimes/runtimes.sh, as for the container tests).
func imageUnderTest(t *testing.T) (docker, image string) {
	t.Helper()
	testroot.Require(t)
	image = envValue(t, "FSMON_IMAGE", "make test builds it with make image")
	docker = testroot.RequireCommand(t, "docker")
	if out, err := runErr(docker, "image", "inspect", image); err != nil {
		t.Fatalf("image %s: %v\n%s", image, err, out)
	}
	return docker, image
}

// TestImageContents: the image has the binary, its CA bundle and the
// default configuration, which the binary accepts, and nothing else to
// run (no shell: FROM scratch).
func TestImageContents(t *testing.T) {
	docker, image := imageUnderTest(t)
	var cfg struct {
		User       string
		Entrypoint []string
		Cmd        []string
	}
	if err := json.Unmarshal([]byte(run(t, docker, "image", "inspect", "-f", "{{json .Config}}", image)), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.User != "0:0" || !slices.Equal(cfg.Entrypoint, []string{"/bin/fsmon_exporter"}) || !slices.Equal(cfg.Cmd, []string{"--config.file=" + configPath}) {
		t.Errorf("image config %+v", cfg)
	}
	id := strings.TrimSpace(run(t, docker, "create", image))
	t.Cleanup(func() { _, _ = runErr(docker, "rm", "-f", id) })
	tarFile := filepath.Join(t.TempDir(), "image.tar")
	run(t, docker, "export", "-o", tarFile, id)
	var files []string
	for _, l := range strings.Split(run(t, "tar", "-tvf", tarFile), "\n") {
		f := strings.Fields(l)
		if len(f) >= 6 && strings.HasPrefix(f[0], "-") {
			files = append(files, f[len(f)-1])
		}
	}
	slices.Sort(files)
	// Docker's own mount points (.dockerenv, etc/hosts ...) are empty files.
	want := []string{"bin/fsmon_exporter", "etc/fsmon_exporter/config.yml", "etc/ssl/certs/ca-certificates.crt"}
	for _, w := range want {
		if !slices.Contains(files, w) {
			t.Errorf("the image lacks %s (files: %v)", w, files)
		}
	}
	for _, f := range files {
		if strings.HasSuffix(f, "/sh") || strings.HasPrefix(f, "lib") || strings.HasPrefix(f, "usr/") {
			t.Errorf("the image has %s: want nothing but the static binary and its two files", f)
		}
	}
	out, err := runErr(docker, "run", "--rm", "--network=none", image, "--config.check", "--config.file="+configPath)
	if err != nil {
		t.Errorf("the image's %s does not pass --config.check: %v\n%s", configPath, err, out)
	}
}

// TestImageDenies runs the image as the chart runs it (the host's PID
// namespace, root with the chart's capabilities, not privileged, a
// read-only root, the configuration as a mounted directory): it denies an
// open of a host file and an open of a file inside another container,
// says so on stdout, and a real Prometheus scrapes it.
func TestImageDenies(t *testing.T) {
	docker, image := imageUnderTest(t)
	promBin := testroot.RequireCommand(t, "prometheus")
	const victimImage = "fsmon-test/busybox:local" // tools/runtimes/runtimes.sh
	if out, err := runErr(docker, "image", "inspect", victimImage); err != nil {
		testroot.Unavailable(t, "%s (tools/runtimes/runtimes.sh makes it): %v %s", victimImage, err, out)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}

	// Another container, with the file runtimes.sh put in it.
	victim := strings.TrimSpace(run(t, docker, "run", "-d", "--network=none", victimImage))
	t.Cleanup(func() { _, _ = runErr(docker, "rm", "-f", victim) })

	// A host file. The daemon reaches the host's files below
	// /proc/1/root; where PID 1 cannot be inspected (these test machines)
	// it takes its own root for the host's, so the directory is also
	// bound in at the same path: the mark is on the host's inode either way.
	hostDir := filepath.Join(dir, "host")
	secret := filepath.Join(hostDir, "secret")
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte("host secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A key in a directory of mode 0700 owned by another user (as
	// ~/.ssh is): root reaches it only with CAP_DAC_READ_SEARCH.
	private := filepath.Join(hostDir, "private")
	key := filepath.Join(private, "key")
	if err := os.MkdirAll(private, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte("private key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{key, private} {
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	cfgDir := filepath.Join(dir, "config")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`mode: protect
important_files: false
profiles:
  - name: host
    host: true
    filters:
      - {name: secret, path: %s, behavior: block, allow: [/nonexistent]}
      - {name: key, path: %s, behavior: block, allow: [/nonexistent]}
  - name: ctr
    containers: {id: %q}
    filters:
      - {name: secret, path: /etc/fsmon-secret, behavior: block, allow: [/nonexistent]}
`, secret, key, victim)
	if err := os.WriteFile(filepath.Join(cfgDir, "config.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	stateDir := filepath.Join(dir, "state")
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		t.Fatal(err)
	}

	addr := testroot.FreeAddr(t)
	args := []string{"run", "-d", "--pid=host", "--network=host", "--read-only", "--cap-drop=ALL"}
	for _, c := range chartCaps(t) {
		args = append(args, "--cap-add="+c)
	}
	args = append(args,
		"-v", cfgDir+":"+filepath.Dir(configPath)+":ro",
		"-v", hostDir+":"+hostDir+":ro",
		"-v", stateDir+":/var/lib/fsmon_exporter",
		// The runtimes' records of containers, as the chart mounts them.
		"-v", "/run/docker/runtime-runc:/run/docker/runtime-runc:ro",
		"-v", "/run/containerd/runc:/run/containerd/runc:ro",
		"-v", "/run/runc:/run/runc:ro",
		image, "--config.file="+configPath, "--web.listen-address="+addr)
	daemon := strings.TrimSpace(run(t, docker, args...))
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := runErr(docker, "logs", "--tail", "60", daemon)
			t.Logf("daemon container's logs:\n%s", out)
		}
		_, _ = runErr(docker, "rm", "-f", daemon)
	})
	if out := run(t, docker, "inspect", "-f", "{{.HostConfig.Privileged}} {{.HostConfig.PidMode}}", daemon); strings.TrimSpace(out) != "false host" {
		t.Fatalf("daemon container privileged, pid mode: %s", out)
	}
	running := func() string {
		out, _ := runErr(docker, "inspect", "-f", "{{.State.Status}} exit={{.State.ExitCode}}", daemon)
		return strings.TrimSpace(out)
	}
	poll(t, 90*time.Second, "the daemon's /-/ready is 200", func() (bool, string) {
		code, body := httpStatus("http://" + addr + "/-/ready")
		if state := running(); code != 200 && strings.HasPrefix(state, "exited") {
			t.Fatalf("the daemon's container %s before it was ready", state)
		}
		return code == 200, fmt.Sprintf("HTTP %d %q, container %s", code, body, running())
	})
	poll(t, 60*time.Second, "the daemon finds the other container (fsmon_profile_groups{profile=\"ctr\"} 1)", func() (bool, string) {
		_, body := httpStatus("http://" + addr + "/metrics")
		return strings.Contains(body, `fsmon_profile_groups{profile="ctr"} 1`), grepLines(body, "fsmon_profile_groups")
	})

	// The opens, by processes outside the daemon's container. A
	// permission event nobody answers would leave the opener waiting in
	// the kernel: a deadline makes that a failure, not a hang.
	catCmd := func(name string, args ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if ctx.Err() != nil {
			t.Errorf("%s %v did not return within a minute: an open nobody answered?", name, args)
		}
		return out, err
	}
	out, err := catCmd("cat", secret)
	if err == nil || !strings.Contains(string(out), "not permitted") || strings.Contains(string(out), "host secret") {
		t.Errorf("cat %s on the host: %v %q, want EPERM", secret, err, out)
	}
	out, err = catCmd("cat", key)
	if err == nil || !strings.Contains(string(out), "not permitted") || strings.Contains(string(out), "private key") {
		t.Errorf("cat %s (in a directory of mode 0700 of another user) on the host: %v %q, want EPERM", key, err, out)
	}
	out, err = catCmd(docker, "exec", victim, "cat", "/etc/fsmon-secret")
	if err == nil || !strings.Contains(string(out), "not permitted") || strings.Contains(string(out), "runtime secret") {
		t.Errorf("cat /etc/fsmon-secret in the other container: %v %q, want EPERM", err, out)
	}

	// Both denies, on the container's stdout as JSON lines.
	poll(t, 30*time.Second, "three denied events on the daemon's stdout", func() (bool, string) {
		cmd := exec.Command(docker, "logs", daemon)
		var stdout strings.Builder
		cmd.Stdout = &stdout
		if err := cmd.Run(); err != nil {
			return false, err.Error()
		}
		host, ctr, keyDenied := false, false, false
		var seen []string
		sc := bufio.NewScanner(strings.NewReader(stdout.String()))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev map[string]any
			if json.Unmarshal(sc.Bytes(), &ev) != nil || ev["event"] != "denied" {
				continue
			}
			seen = append(seen, fmt.Sprintf("%v:%v:%v", ev["profile"], ev["file.path"], ev["container.id"]))
			host = host || (ev["profile"] == "host" && ev["file.path"] == secret)
			keyDenied = keyDenied || (ev["profile"] == "host" && ev["file.path"] == key)
			ctr = ctr || (ev["profile"] == "ctr" && ev["file.path"] == "/etc/fsmon-secret" && ev["container.id"] == victim)
		}
		return host && ctr && keyDenied, fmt.Sprintf("host deny seen %v, container deny seen %v, key deny seen %v; denied events %v", host, ctr, keyDenied, seen)
	})

	// A real Prometheus scrapes it.
	promAddr := testroot.FreeAddr(t)
	promCfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(promCfg, []byte(fmt.Sprintf("global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:\n  - job_name: fsmon\n    static_configs: [{targets: [%q]}]\n", addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	prom := exec.Command(promBin, "--config.file="+promCfg, "--storage.tsdb.path="+filepath.Join(dir, "prom"), "--web.listen-address="+promAddr)
	promLog := &testroot.Buffer{}
	prom.Stdout, prom.Stderr = promLog, promLog
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = prom.Process.Kill()
		_ = prom.Wait()
		if t.Failed() {
			t.Logf("prometheus:\n%s", promLog.String())
		}
	})
	poll(t, 60*time.Second, "Prometheus scrapes the image's daemon: three denies in fsmon_access_denied_total", func() (bool, string) {
		up, err := promQuery(promAddr, `up{job="fsmon"}`)
		if err != nil {
			return false, err.Error()
		}
		denied, err := promQuery(promAddr, `sum(fsmon_access_denied_total{job="fsmon"})`)
		if err != nil {
			return false, err.Error()
		}
		return len(up) == 1 && up[0].Value[1] == "1" && len(denied) == 1 && denied[0].Value[1] == "3",
			fmt.Sprintf("up %v, denied %v", up, denied)
	})
}

func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}
