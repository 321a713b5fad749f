package main

// The shipped examples on this host: each starts, and host-protect.yaml
// in protect mode lets the host's user administration and logins work
// while it denies everyone else.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// TestExamplesStart: every shipped configuration passes --config.check
// and starts (ready: every mark placed).
func TestExamplesStart(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if out, err := runCmd(t, testroot.Binary(t), "--config.check", "--config.file="+f); err != nil {
				t.Fatalf("--config.check: %v %s", err, out)
			}
			testroot.HostShadowLock(t) // host-protect.yaml denies /etc/shadow to others
			d := startDaemon(t, "--config.file="+f)
			d.waitLog(t, 1, "msg=ready")
		})
	}
}

// runOK runs a command line and fails t unless it exits 0.
func runOK(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	c.Stdin = strings.NewReader(stdin)
	c.Env = append(os.Environ(), "LC_ALL=C")
	// A child left holding the output (login under script) must not
	// hold the test past the deadline.
	c.WaitDelay = 5 * time.Second
	out, err := c.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %q hung", name, args)
	}
	if err != nil {
		t.Fatalf("%s %q under host-protect.yaml: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, p := range tools {
		if _, err := os.Stat(p); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s missing (make deps-debian installs it): %v", p, err)
			}
			t.Skipf("%s missing", p)
		}
	}
}

func TestHostProtectExampleLetsTheHostWork(t *testing.T) {
	testroot.Require(t)
	need(t, "/usr/bin/passwd", "/usr/bin/chage", "/usr/sbin/useradd", "/usr/sbin/usermod", "/usr/sbin/userdel",
		"/usr/sbin/chpasswd", "/usr/sbin/unix_chkpwd", "/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen",
		"/usr/bin/login", "/usr/bin/su", "/usr/bin/sudo", "/usr/bin/setpriv", "/usr/bin/script", "/usr/bin/busybox")
	testroot.HostShadowLock(t)
	d := startDaemon(t, "--config.file=examples/host-protect.yaml")
	user := fmt.Sprintf("fsmone2e%d", os.Getpid()%100000)
	const pw = "Fsmon-e2e-pw1"
	t.Cleanup(func() { exec.Command("userdel", "-r", "-f", user).Run() })

	// User administration.
	runOK(t, "", "useradd", "-m", "-s", "/bin/sh", user)
	runOK(t, user+":"+pw+"\n", "chpasswd")
	if out := runOK(t, "", "passwd", "-S", user); !strings.HasPrefix(out, user+" P ") {
		t.Fatalf("passwd -S: %q", out)
	}
	runOK(t, "", "passwd", "-l", user)
	runOK(t, "", "passwd", "-u", user)
	if out := runOK(t, "", "chage", "-l", user); !strings.Contains(out, "Password expires") {
		t.Fatalf("chage -l: %q", out)
	}
	runOK(t, "", "chage", "-M", "90", user)
	runOK(t, "", "usermod", "-c", "fsmon e2e", "-aG", "sudo", user)

	// Checking passwords: PAM's helper as the user, su and sudo as the
	// user (with the password) and as root, login.
	asUser := []string{"--reuid=" + user, "--regid=" + user, "--init-groups"}
	runOK(t, pw+"\x00", "setpriv", append(asUser, "/usr/sbin/unix_chkpwd", user, "nullok")...)
	if out := runOK(t, pw+"\n", "setpriv", append(asUser, "su", user, "-c", "id -un")...); !strings.Contains(out, user) {
		t.Fatalf("su as the user: %q", out)
	}
	runOK(t, "", "su", user, "-c", "true")
	if out := runOK(t, pw+"\n", "setpriv", append(asUser, "sudo", "-S", "-k", "-u", user, "id", "-un")...); !strings.Contains(out, user) {
		t.Fatalf("sudo as the user: %q", out)
	}
	runOK(t, "", "sudo", "-u", user, "true")
	if out := runOK(t, "id -un\nexit\n", "script", "-qec", "login -f "+user, "/dev/null"); !strings.Contains(out, user) {
		t.Fatalf("login: %q", out)
	}

	// sshd: a login by key, through PAM's account check.
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	runOK(t, "", "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
	ssh := filepath.Join("/home", user, ".ssh")
	runOK(t, "", "install", "-d", "-o", user, "-g", user, "-m", "700", ssh)
	runOK(t, "", "install", "-o", user, "-g", user, "-m", "600", key+".pub", filepath.Join(ssh, "authorized_keys"))
	os.MkdirAll("/run/sshd", 0o755)
	addr := testroot.FreeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	sshd := exec.Command("/usr/sbin/sshd", "-D", "-e", "-p", port, "-o", "ListenAddress="+host, "-o", "PidFile=none", "-o", "UsePAM=yes")
	sshdLog := &testroot.Buffer{}
	sshd.Stderr = sshdLog
	if err := sshd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sshd.Process.Kill(); sshd.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sshd does not listen: %v\n%s", err, sshdLog.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out := runOK(t, "", "ssh", "-i", key, "-p", port, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", user+"@"+host, "id", "-un"); !strings.Contains(out, user) {
		t.Fatalf("ssh: %q\n%s", out, sshdLog.String())
	}

	// And the account goes, once the sessions above have ended (userdel
	// refuses a user who still runs a process).
	sshd.Process.Kill()
	sshd.Wait()
	for deadline := time.Now().Add(30 * time.Second); exec.Command("pgrep", "-u", user).Run() == nil; {
		if time.Now().After(deadline) {
			out, _ := exec.Command("pgrep", "-a", "-u", user).CombinedOutput()
			t.Fatalf("processes of %s still run after 30s: %s", user, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	runOK(t, "", "userdel", "-r", user)

	// Anyone else is denied: cat, busybox, and busybox in a file named
	// passwd (its process name is then passwd; argv[0] cat picks the
	// applet): the entries are paths, which a name cannot pass for.
	mustBeDenied(t, "/etc/shadow", "cat under host-protect.yaml")
	fake := filepath.Join(dir, "passwd")
	if err := os.Symlink("/usr/bin/busybox", fake); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*exec.Cmd{exec.Command("/usr/bin/busybox", "cat", "/etc/shadow"), {Path: fake, Args: []string{"cat", "/etc/shadow"}}} {
		out, err := c.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "Operation not permitted") {
			t.Errorf("%s %q under host-protect.yaml: %v %q, want EPERM", c.Path, c.Args, err, out)
		}
	}
	d.event(t, "the fake passwd denied", func(m map[string]any) bool {
		return m["event"] == "denied" && m["file.path"] == "/etc/shadow" && m["process.executable.name"] == "passwd"
	})
	// Nothing that is allowed was denied on the way: pam_unix falls back
	// to unix_chkpwd when it cannot read the file, so a login still
	// works, but each such deny is a page (FsmonAccessDenied). The fake
	// passwd's deny was the last open, so every earlier event is in.
	d.event(t, "busybox denied", func(m map[string]any) bool {
		return m["event"] == "denied" && m["file.path"] == "/etc/shadow" && m["process.executable.path"] == "/usr/bin/busybox"
	})
	d.mu.Lock()
	lines := d.lines
	d.mu.Unlock()
	for _, m := range lines {
		if m["event"] == "denied" || m["event"] == "timeout" {
			if exe := m["process.executable.path"]; exe != "/usr/bin/cat" && exe != "/usr/bin/busybox" {
				t.Errorf("%v %v %v by %v (%v)", m["event"], m["op"], m["file.path"], exe, m["process.command_line"])
			}
		}
	}
}
