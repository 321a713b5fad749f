package engine

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// cmdEnv runs name with exactly the environment env.
func cmdEnv(t *testing.T, env []string, name string, args ...string) res {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	c.Env = env
	out, err := c.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v hung: the open was never answered", name, args)
	}
	return res{string(out), err}
}

// TestLoaderEnvRefusesExecutableEntries: cat, allowed by its path, run
// with LD_PRELOAD pointing at a file that does not exist (the loader
// ignores it, but the rule must not: another value would load code into
// cat), is denied, and the event says why; LD_AUDIT and LD_LIBRARY_PATH
// likewise. The same cat without them, or with a look-alike name, is
// allowed. A name entry is not affected (it proves nothing anyway). The
// same holds with the kernel's record and, the cache off, with
// /proc/PID/environ.
func TestLoaderEnvRefusesExecutableEntries(t *testing.T) {
	for _, cache := range []ExeCache{ExeCacheOn, ExeCacheOff} {
		name := map[ExeCache]string{ExeCacheOn: "recorded at exec", ExeCacheOff: "environ"}[cache]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			secret := filepath.Join(dir, "secret")
			byName := filepath.Join(dir, "by-name")
			writeFile(t, secret, "s\n")
			writeFile(t, byName, "s\n")
			h := start(t, blockFile("protect", secret, "/usr/bin/cat")+`      - name: by-name
        path: `+byName+`
        behavior: block
        allow: [cat]
`, func(o *Options) { o.ExeCache = cache })
			if cache == ExeCacheOn {
				requireExeCache(t, h)
			}
			base := []string{"PATH=/usr/bin:/bin"}
			for _, tc := range []struct {
				v    string
				want fsmon.LoaderEnv
			}{
				{"LD_PRELOAD=/nonexistent/preload.so", fsmon.LoaderPreload},
				{"LD_AUDIT=/nonexistent/audit.so", fsmon.LoaderAudit},
				{"LD_LIBRARY_PATH=" + dir, fsmon.LoaderLibraryPath},
			} {
				r := cmdEnv(t, append(base, tc.v), "/usr/bin/cat", secret)
				if r.err == nil {
					t.Fatalf("cat run with %s read the file: %s", tc.v, r.out)
				}
				mustDeny(t, r)
				ev := h.rec.waitFor(t, "cat with "+tc.v+" denied", func(ev *fsmon.Event) bool {
					return kind(fsmon.KindDenied, secret)(ev) && ev.Process.LoaderEnv == tc.want
				})
				if ev.Process.ExecutablePath != "/usr/bin/cat" {
					t.Errorf("the event of cat run with %s names %s", tc.v, ev.Process.ExecutablePath)
				}
				// A name entry still lets it in.
				mustAllow(t, cmdEnv(t, append(base, tc.v), "/usr/bin/cat", byName))
			}
			mustAllow(t, cmdEnv(t, base, "/usr/bin/cat", secret))
			mustAllow(t, cmdEnv(t, append(base, "LD_PRELOADX=1", "X=LD_PRELOAD=/x.so"), "/usr/bin/cat", secret))
		})
	}
}

// TestLoaderEnvIsTheOneAtExec: an allowed python, run with LD_PRELOAD,
// zeroes its own initial environment (through /proc/self/mem, as a
// preloaded constructor would) before it opens the file, so that
// /proc/PID/environ shows nothing. The record made at exec still denies
// it; with the cache off (only /proc/PID/environ) the same run gets in,
// which shows that the record is what denies.
func TestLoaderEnvIsTheOneAtExec(t *testing.T) {
	// The program itself, not a wrapper (pyenv's shims are scripts).
	out, err := exec.Command(testroot.RequireCommand(t, "python3"), "-c", "import os, sys; print(os.path.realpath(sys.executable))").Output()
	if err != nil {
		t.Fatal(err)
	}
	python := strings.TrimSpace(string(out))
	script := `
import sys
f = open('/proc/self/stat').read().rsplit(')', 1)[1].split()
start, end = int(f[47]), int(f[48])
with open('/proc/self/mem', 'r+b', buffering=0) as m:
    m.seek(start)
    m.write(b'\0' * (end - start))
if b'LD_PRELOAD' in open('/proc/self/environ', 'rb').read():
    sys.exit('environ still shows LD_PRELOAD')
open(sys.argv[1]).read()
print('read')
`
	for _, cache := range []ExeCache{ExeCacheOn, ExeCacheOff} {
		dir := t.TempDir()
		secret := filepath.Join(dir, "secret")
		writeFile(t, secret, "s\n")
		h := start(t, blockFile("protect", secret, python), func(o *Options) { o.ExeCache = cache })
		env := []string{"PATH=/usr/bin:/bin", "LD_PRELOAD=/nonexistent/preload.so"}
		mustAllow(t, cmdEnv(t, env[:1], python, "-c", script, secret))
		r := cmdEnv(t, env, python, "-c", script, secret)
		if cache == ExeCacheOff {
			if r.err != nil || !strings.HasSuffix(r.out, "read\n") {
				t.Fatalf("with only /proc/PID/environ, the scrubbed python did not get in (%v: %s): the test shows nothing", r.err, r.out)
			}
			continue
		}
		requireExeCache(t, h)
		if r.err == nil {
			t.Fatalf("python run with LD_PRELOAD, its environ scrubbed, read the file: %s", r.out)
		}
		if !strings.Contains(r.out, "PermissionError") {
			t.Fatalf("expected EPERM: %v: %s", r.err, r.out)
		}
		h.rec.waitFor(t, "the scrubbed python denied", func(ev *fsmon.Event) bool {
			return kind(fsmon.KindDenied, secret)(ev) && ev.Process.LoaderEnv == fsmon.LoaderPreload
		})
	}
}
