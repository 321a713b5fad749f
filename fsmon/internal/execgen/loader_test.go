package execgen

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// runWithEnv starts sh with exactly env, waits until it has printed (its
// exec has returned, so its record is written), and returns what its
// slot recorded. The shell waits on its stdin until the test ends, so
// that no other exec of its own can overwrite the record.
func runWithEnv(t *testing.T, c *Counter, env []string) (fsmon.LoaderEnv, bool) {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	sh := exec.Command("/bin/sh", "-c", "echo up; read x")
	sh.Env = env
	sh.Stdin, sh.Stdout = inR, outW // the loader complains on stderr
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	outW.Close()
	t.Cleanup(func() { inW.Close(); sh.Wait(); outR.Close() })
	outR.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := bufio.NewReader(outR).ReadString('\n'); line != "up\n" {
		t.Fatalf("the shell printed %q (%v)", line, err)
	}
	return c.Loader(int32(sh.Process.Pid))
}

func vars(n, size int) []string {
	var s []string
	for i := 0; i < n; i++ {
		s = append(s, fmt.Sprintf("V%d=%s", i, strings.Repeat("z", size)))
	}
	return s
}

// TestLoaderEnv: the exec program records the loader's variables of a
// new program's initial environment, by name and only by name, also
// after long and many variables, and says when the environment is
// longer than it scans.
func TestLoaderEnv(t *testing.T) {
	testroot.Require(t)
	c, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.LoaderErr(); err != nil {
		testroot.Unavailable(t, "the loader environment is not recorded here: %v", err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		want fsmon.LoaderEnv
	}{
		{"empty", nil, 0},
		{"plain", []string{"PATH=/usr/bin", "HOME=/root"}, 0},
		{"preload", []string{"A=1", "LD_PRELOAD=/nonexistent.so"}, fsmon.LoaderPreload},
		{"empty preload", []string{"LD_PRELOAD="}, fsmon.LoaderPreload},
		{"audit", []string{"LD_AUDIT=x"}, fsmon.LoaderAudit},
		{"library path after a long variable", []string{"X=" + strings.Repeat("y", 200), "LD_LIBRARY_PATH=/tmp"}, fsmon.LoaderLibraryPath},
		{"all three", []string{"LD_LIBRARY_PATH=/tmp", "LD_AUDIT=a", "LD_PRELOAD=p"}, fsmon.LoaderPreload | fsmon.LoaderAudit | fsmon.LoaderLibraryPath},
		{"look-alikes", []string{"LD_PRELOADX=1", "LD_PRELOAD", "LD_AUDITOR=1", "LD_LIBRARY_PATHS=1", "X=LD_PRELOAD=/x.so"}, 0},
		// A variable whose first 63 bytes fill a chunk: the rest of it
		// is not taken for the start of a variable.
		{"name inside a long value", []string{"X=" + strings.Repeat("y", 61) + "LD_PRELOAD=/x.so"}, 0},
		{"after 100 variables of 100 bytes", append(vars(100, 100), "LD_PRELOAD=/x.so"), fsmon.LoaderPreload},
		{"past the scanned part", append(vars(300, 1), "LD_PRELOAD=/x.so"), fsmon.LoaderTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := runWithEnv(t, c, tc.env)
			if !ok {
				t.Fatal("no record of the shell's own exec")
			}
			if got&^fsmon.LoaderSecure != tc.want {
				t.Errorf("recorded %#x (%q), want %#x (%q)", got, got, tc.want, tc.want)
			}
			if got&fsmon.LoaderSecure != 0 {
				t.Errorf("a shell run as root was recorded as secure-exec")
			}
		})
	}
}
