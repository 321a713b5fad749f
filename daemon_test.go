package main

// End-to-end tests of the binary: flags, configuration errors, signals,
// HTTP endpoints and the JSON lines on stdout, with real child processes.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

type daemon struct {
	cmd    *exec.Cmd
	addr   string
	stderr *testroot.Buffer
	mu     sync.Mutex
	lines  []map[string]any
	done   chan error
}

// startDaemon starts the binary and waits until /-/ready says 200.
func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	return startDaemonEnv(t, nil, args...)
}

// startDaemonEnv is startDaemon with extra environment variables.
func startDaemonEnv(t *testing.T, env []string, args ...string) *daemon {
	t.Helper()
	testroot.Require(t)
	bin := testroot.Binary(t)
	d := &daemon{addr: testroot.FreeAddr(t), stderr: &testroot.Buffer{}, done: make(chan error, 1)}
	base := []string{"--web.listen-address=" + d.addr}
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--events.fold-window=") }) {
		base = append(base, "--events.fold-window=0")
	}
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--state.dir=") }) {
		base = append(base, "--state.dir="+t.TempDir()) // the machine's own is not the tests' business
	}
	d.cmd = exec.Command(bin, append(base, args...)...)
	d.cmd.Stderr = d.stderr
	d.cmd.Env = append(os.Environ(), env...)
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = map[string]any{"_not_json": sc.Text()}
			}
			d.mu.Lock()
			d.lines = append(d.lines, m)
			d.mu.Unlock()
		}
		d.done <- d.cmd.Wait()
	}()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("daemon stderr:\n%s", d.stderr.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + d.addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return d
			}
		}
		select {
		case err := <-d.done:
			t.Fatalf("daemon exited before ready: %v\n%s", err, d.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not ready within 60s\n%s", d.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *daemon) event(t *testing.T, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d.mu.Lock()
		for _, m := range d.lines {
			if match(m) {
				d.mu.Unlock()
				return m
			}
		}
		n := len(d.lines)
		d.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no JSON line %s within 10s (%d lines)", what, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *daemon) signal(t *testing.T, s syscall.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(s); err != nil {
		t.Fatal(err)
	}
}

func (d *daemon) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-d.done:
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("daemon did not exit within 15s")
		return nil
	}
}

// waitExit waits for the daemon to exit, at most bound.
func (d *daemon) waitExit(t *testing.T, bound time.Duration) error {
	t.Helper()
	select {
	case err := <-d.done:
		return err
	case <-time.After(bound):
		t.Fatalf("daemon did not exit within %v", bound)
		return nil
	}
}

// waitLog waits until n lines of stderr hold every one of parts.
func (d *daemon) waitLog(t *testing.T, n int, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := 0
		for _, l := range strings.Split(d.stderr.String(), "\n") {
			if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(l, p) }) {
				got++
			}
		}
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d stderr lines with %q within 60s:\n%s", got, n, parts, d.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *daemon) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + d.addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of one sample line of the exposition.
func (d *daemon) metric(t *testing.T, series string) string {
	t.Helper()
	_, body := d.get(t, "/metrics")
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, series+" ") {
			return strings.TrimPrefix(l, series+" ")
		}
	}
	return ""
}

func runCmd(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v hung", name, args)
	}
	return string(out), err
}

// mustBeDenied runs cat on file and fails t unless the open failed with
// EPERM, the answer of a fanotify deny: cat exits 1 saying "Operation not
// permitted" (C locale) and prints none of the file. Any other failure (a
// missing file, EACCES, a crash) is not a deny and fails as well.
func mustBeDenied(t *testing.T, file, when string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "cat", file)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s: cat %s hung", when, file)
	}
	want := "cat: " + file + ": Operation not permitted\n"
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || string(out) != want {
		t.Fatalf("%s: cat %s: err=%v output=%q, want exit 1 and %q (EPERM)", when, file, err, out, want)
	}
}

func protectConfig(t *testing.T, file string) string {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "fsmon.yml")
	writeConfig(t, cfg, fmt.Sprintf(`
profiles:
  - name: e2e
    host: true
    mode: protect
    filters:
      - name: secret
        path: %s
        behavior: block
        allow: [/usr/bin/head]
`, file))
	return cfg
}

func writeConfig(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func secretFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigCheck(t *testing.T) {
	bin := testroot.Binary(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yml")
	writeConfig(t, good, "profiles:\n  - name: a\n    filters:\n      - path: /etc/hosts\n")
	if out, err := exec.Command(bin, "--config.check", "--config.file="+good).CombinedOutput(); err != nil {
		t.Fatalf("good config: %v\n%s", err, out)
	}
	bad := filepath.Join(dir, "bad.yml")
	writeConfig(t, bad, `mode: protekt
profiles:
  - name: a
    filters:
      - path: etc/hosts
        regex: '[unclosed'
        bogus: 1
`)
	out, err := exec.Command(bin, "--config.check", "--config.file="+bad).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("bad config: want exit 1, got %v\n%s", err, out)
	}
	for _, want := range []string{bad + ":1: ", bad + ":5: ", bad + ":6: ", bad + ":7: "} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Pod selectors: a good one passes, bad ones are FILE:LINE errors.
	pods := filepath.Join(dir, "pods.yml")
	writeConfig(t, pods, "profiles:\n  - name: a\n    containers: {namespace: 'prod-*', pod: 'api-*', labels: {app.kubernetes.io/name: api, tier: 'back*'}}\n    filters:\n      - path: /etc/hosts\n")
	if out, err := exec.Command(bin, "--config.check", "--config.file="+pods).CombinedOutput(); err != nil {
		t.Fatalf("pod selectors: %v\n%s", err, out)
	}
	badPods := filepath.Join(dir, "bad-pods.yml")
	writeConfig(t, badPods, `profiles:
  - name: a
    containers:
      namespace: 'prod-['
      labels:
        'app*': x
    filters:
      - path: /etc/hosts
`)
	out, err = exec.Command(bin, "--config.check", "--config.file="+badPods).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("bad pod selectors: want exit 1, got %v\n%s", err, out)
	}
	for _, want := range []string{badPods + ":4: containers.namespace: bad glob", badPods + `:6: containers.labels: label key "app*"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// The embedded default is valid.
	if out, err := exec.Command(bin, "--config.check").CombinedOutput(); err != nil {
		t.Fatalf("default: %v\n%s", err, out)
	}
}

func TestBadConfigAtStartExits1(t *testing.T) {
	bin := testroot.Binary(t)
	bad := filepath.Join(t.TempDir(), "bad.yml")
	writeConfig(t, bad, "profiles: [\n")
	out, err := exec.Command(bin, "--config.file="+bad, "--web.listen-address="+testroot.FreeAddr(t)).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "file="+bad+" line=1 ") {
		t.Errorf("error does not name the file and line: %s", out)
	}
}

// TestBadConfigAtStartLogsJSON: with --log.format=json every problem of
// the file is one JSON record of its own, with file, line and problem as
// attributes, and the daemon exits 1.
func TestBadConfigAtStartLogsJSON(t *testing.T) {
	bin := testroot.Binary(t)
	bad := filepath.Join(t.TempDir(), "bad.yml")
	writeConfig(t, bad, `mode: protekt
profiles:
  - name: a
    filters:
      - path: etc/hosts
        regex: '[unclosed'
`)
	c := exec.Command(bin, "--config.file="+bad, "--log.format=json", "--web.listen-address="+testroot.FreeAddr(t))
	var stderr strings.Builder
	c.Stderr = &stderr
	err := c.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v\n%s", err, stderr.String())
	}
	lines := map[float64]string{}
	for _, l := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Fatalf("stderr line is not JSON: %q (%v)\n%s", l, err, stderr.String())
		}
		if rec["level"] != "ERROR" || rec["msg"] != "invalid configuration; not starting" {
			continue
		}
		line, _ := rec["line"].(float64)
		problem, _ := rec["problem"].(string)
		if rec["file"] != bad || line == 0 || problem == "" || strings.Contains(problem, "\n") {
			t.Errorf("record is not one problem with file, line and problem: %v", rec)
		}
		if _, dup := lines[line]; dup {
			t.Errorf("two records for line %v", line)
		}
		lines[line] = problem
	}
	for _, want := range []float64{1, 5, 6} {
		if _, ok := lines[want]; !ok {
			t.Errorf("no record for line %v; got %v\n%s", want, lines, stderr.String())
		}
	}
	if len(lines) != 3 {
		t.Errorf("%d problem records, want 3: %v", len(lines), lines)
	}
}

func TestNotRootIsAClearError(t *testing.T) {
	testroot.Require(t) // to become somebody else
	bin := testroot.Binary(t)
	c := exec.Command(bin, "--web.listen-address="+testroot.FreeAddr(t))
	c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := c.CombinedOutput()
	if err == nil {
		t.Fatalf("started as nobody: %s", out)
	}
	if !strings.Contains(string(out), "must run as root") {
		t.Fatalf("message does not say root is needed: %s", out)
	}
}

func TestDaemonDeniesReportsReloadsAndStops(t *testing.T) {
	secret := secretFile(t)
	cfg := protectConfig(t, secret)
	d := startDaemon(t, "--config.file="+cfg)

	if code, _ := d.get(t, "/-/healthy"); code != 200 {
		t.Errorf("/-/healthy: %d", code)
	}
	if code, body := d.get(t, "/"); code != 200 || !strings.Contains(body, "fsmon_exporter") {
		t.Errorf("landing page: %d %q", code, body)
	}
	mustBeDenied(t, secret, "protect mode")
	ev := d.event(t, "denied", func(m map[string]any) bool { return m["event"] == "denied" && m["file.path"] == secret })
	for _, k := range []string{"time", "op", "mode", "profile", "filter", "process.pid", "process.parent_pid",
		"process.executable.path", "process.executable.name", "process.command_line", "process.user.id", "count"} {
		if _, ok := ev[k]; !ok {
			t.Errorf("denied event lacks %s: %v", k, ev)
		}
	}
	if ev["process.executable.path"] != "/usr/bin/cat" || ev["op"] != "open" || ev["mode"] != "protect" {
		t.Errorf("denied event: %v", ev)
	}
	if _, err := time.Parse(time.RFC3339Nano, ev["time"].(string)); err != nil {
		t.Errorf("time: %v", err)
	}
	if out, err := runCmd(t, "head", secret); err != nil {
		t.Fatalf("allowed head failed: %v %s", err, out)
	}

	// A bad reload keeps the old configuration in force.
	writeConfig(t, cfg, "profiles: [\n")
	d.signal(t, syscall.SIGHUP)
	waitMetric(t, d, "fsmon_config_last_reload_successful", "0")
	mustBeDenied(t, secret, "after a bad reload")
	if !strings.Contains(d.stderr.String(), "file="+cfg+" line=") {
		t.Errorf("reload error does not name the file:\n%s", d.stderr.String())
	}
	// A good one takes effect: now in monitor mode, cat is reported, not
	// denied.
	writeConfig(t, cfg, strings.Replace(readFile(t, protectConfig(t, secret)), "mode: protect", "mode: monitor", 1))
	d.signal(t, syscall.SIGHUP)
	waitMetric(t, d, "fsmon_config_last_reload_successful", "1")
	if out, err := runCmd(t, "cat", secret); err != nil {
		t.Fatalf("after reload to monitor mode cat failed: %v %s", err, out)
	}
	d.event(t, "violation", func(m map[string]any) bool { return m["event"] == "violation" && m["file.path"] == secret })
	// Learn mode's set is served as JSON.
	writeConfig(t, cfg, strings.Replace(readFile(t, protectConfig(t, secret)), "mode: protect", "mode: learn", 1))
	d.signal(t, syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		runCmd(t, "cat", secret)
		_, body := d.get(t, "/learned")
		if strings.Contains(body, `"executable":"/usr/bin/cat"`) && strings.Contains(body, `"filter":"secret"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/learned after a learned open: %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("SIGTERM: want exit 0, got %v", err)
	}
}

// TestStateDirKeepsAllowResolutions: --state.dir is where the daemon
// keeps what allow entries resolved to; after SIGTERM it holds the
// record of the entry an allowed open resolved (the engine's tests show
// what a restart does with it).
func TestStateDirKeepsAllowResolutions(t *testing.T) {
	secret := secretFile(t)
	state := filepath.Join(t.TempDir(), "state")
	d := startDaemon(t, "--config.file="+protectConfig(t, secret), "--state.dir="+state)
	if out, err := runCmd(t, "head", secret); err != nil {
		t.Fatalf("allowed head failed: %v %s", err, out)
	}
	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("SIGTERM: want exit 0, got %v", err)
	}
	b, err := os.ReadFile(filepath.Join(state, "allow-resolutions.json"))
	if err != nil || !strings.Contains(string(b), `"path": "/usr/bin/head"`) {
		t.Fatalf("state after SIGTERM: %v\n%s", err, b)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func waitMetric(t *testing.T, d *daemon, series, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := d.metric(t, series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %q, want %q", series, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestSIGKILLLeavesNothingBlocked(t *testing.T) {
	secret := secretFile(t)
	d := startDaemon(t, "--config.file="+protectConfig(t, secret))
	mustBeDenied(t, secret, "before SIGKILL")
	d.cmd.Process.Kill()
	<-d.done
	// The kernel answers for a dead daemon: allowed, at once (run fails
	// the test if cat hangs).
	if out, err := runCmd(t, "cat", secret); err != nil {
		t.Fatalf("after SIGKILL cat failed: %v %s", err, out)
	}
}

// TestDefaultProfile runs the embedded default, as `make run` does, and
// checks a change under one of its important paths (/home/*/.ssh).
func TestDefaultProfile(t *testing.T) {
	testroot.Require(t)
	home := fmt.Sprintf("/home/fsmon-e2e-%d", os.Getpid())
	ssh := filepath.Join(home, ".ssh")
	if err := os.MkdirAll(ssh, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	key := filepath.Join(ssh, "authorized_keys")
	if err := os.WriteFile(key, []byte("ssh-ed25519 AAAA test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t)
	// A change is read after the fact: the writer stays alive (blocked
	// reading its stdin) until its event is seen, so that the daemon can
	// still read what it runs, whatever the load.
	sh := exec.Command("sh", "-c", "echo 'ssh-ed25519 BBBB intruder' >> "+key+"; read x || :")
	stdin, err := sh.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var shOut testroot.Buffer
	sh.Stdout, sh.Stderr = &shOut, &shOut
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	ev := d.event(t, "change write", func(m map[string]any) bool {
		return m["event"] == "change" && m["op"] == "write" && m["file.path"] == key
	})
	stdin.Close()
	if err := sh.Wait(); err != nil {
		t.Fatalf("sh: %v %s", err, shOut.String())
	}
	if ev["profile"] != "default" || ev["mode"] != "monitor" || ev["process.executable.name"] != "sh" {
		t.Errorf("%v", ev)
	}
	// /-/ready answers 200 as soon as the engine has placed the marks;
	// main logs the line after that: wait for it, do not race it.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.stderr.String(), "msg=ready") {
		if time.Now().After(deadline) {
			t.Fatalf("no ready log line within 10s of ready:\n%s", d.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
