package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Scenario k: the window in which a new container's opens are not yet
// judged (issue 16). Each container's command reads its protected file
// (/etc/hostname, which every runtime provides) with cat in a loop until
// a read is denied, and prints how many reads got through first: 0 is
// a container protected from its first open. Counted per container,
// not timed, in three set-ups: Docker found by the periodic scan only
// (--process.table=off: no exec events), Docker found by exec events
// (the default), and podman with the daemon's OCI hook.

const firstImage = "fsmon-test/busybox:local"

type firstCase struct {
	key, title string
	runtime    string   // docker or podman
	args       []string // the daemon's extra flags
	hook       bool
}

type firstResult struct {
	c       firstCase
	reads   []float64 // reads that got through, per container
	zero    int       // containers whose first read was denied
	skipped string
}

func firstOpen(n int) []firstResult {
	cases := []firstCase{
		{"scan", "Docker, periodic scan only (1 s; --process.table=off)", "docker", []string{"--process.table=off"}, false},
		{"exec", "Docker, discovery on exec events (default)", "docker", nil, false},
		{"hook", "podman (runc), OCI hook (createRuntime)", "podman", nil, true},
	}
	var out []firstResult
	for _, c := range cases {
		r := firstResult{c: c}
		if err := exec.Command(c.runtime, "image", "inspect", firstImage).Run(); err != nil {
			r.skipped = fmt.Sprintf("%s has no %s (tools/runtimes/runtimes.sh up)", c.runtime, firstImage)
			out = append(out, r)
			continue
		}
		progress("first open: %s", c.title)
		sock := filepath.Join(tmpRoot, "hook-"+c.key+".sock")
		hooks := filepath.Join(tmpRoot, "hooks-"+c.key)
		must(os.MkdirAll(hooks, 0o755))
		must(os.WriteFile(filepath.Join(hooks, "fsmon.json"), []byte(fmt.Sprintf(
			`{"version":"1.0.0","hook":{"path":%q,"args":["fsmon_exporter","hook","--socket=%s"]},"when":{"always":true},"stages":["createRuntime"]}`,
			*daemonBin, sock)), 0o644))
		cfg := `profiles:
  - name: bench
    containers: {name: 'fsmon-bench-k-*'}
    mode: protect
    filters:
      - name: hostname
        path: /etc/hostname
        behavior: block
        allow: [head]
`
		args := append([]string{"--containers.hook-socket=" + sock}, c.args...)
		d := startDaemon(-1, cfg, args...)
		for i := range n {
			name := fmt.Sprintf("fsmon-bench-k-%s-%d", c.key, i)
			run := []string{"run", "--rm", "--name", name}
			if c.runtime == "podman" {
				run = append([]string{"--runtime", "runc"}, run...)
				run = append(run, "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
				if c.hook {
					run = append([]string{"--hooks-dir=" + hooks}, run...)
				}
			}
			run = append(run, firstImage, "sh", "-c", "n=0; while cat /etc/hostname >/dev/null 2>&1; do n=$((n+1)); [ $n -ge 100000 ] && break; done; echo reads=$n")
			cmd := exec.Command(c.runtime, run...)
			b, err := cmd.CombinedOutput()
			s := string(b)
			i := strings.LastIndex(s, "reads=")
			if err != nil || i < 0 {
				d.stop()
				fatalf("first open, %s: %s %v: %s", c.key, name, err, b)
			}
			v, _ := strconv.Atoi(strings.Fields(s[i+6:])[0])
			r.reads = append(r.reads, float64(v))
			if v == 0 {
				r.zero++
			}
			logf("first open: %s %s: %d reads before the first deny", c.key, name, v)
		}
		d.stop()
		out = append(out, r)
	}
	return out
}

func reportFirstOpen(w io.Writer, rs []firstResult, n int) {
	fmt.Fprintf(w, "k. A new container's first opens: %d containers each, whose command reads /etc/hostname (protected, block) with cat in a loop until denied; reads that got through, per container\n\n", n)
	fmt.Fprintln(w, "| set-up | containers denied at the first read | reads through, median | max |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	for _, r := range rs {
		if r.skipped != "" {
			fmt.Fprintf(w, "| %s | skipped: %s | | |\n", r.c.title, r.skipped)
			continue
		}
		_, hi := spread(r.reads)
		fmt.Fprintf(w, "| %s | %d of %d | %.0f | %.0f |\n", r.c.title, r.zero, len(r.reads), median(r.reads), hi)
	}
	fmt.Fprintln(w)
}
