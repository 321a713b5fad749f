package main

// make soak (issue 19, point 5): the daemon under a steady mix of
// allowed and denied opens, changed files, reloads and container churn
// for -soak (DURATION, default 10m); resident memory, descriptors,
// goroutines, marks and watches are read at a quiet point after the
// warm-up and at the end, and the run fails if any grew by more than
// 10 %. A benchmark, not a test.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// soakSample is what is compared between the two quiet points.
type soakSample struct {
	rss, fds, goroutines, marks, watches float64
	pidfds                               float64 // the executable cache's, one an entry: bounded (1024), not compared
}

func (s soakSample) fields() []struct {
	name string
	v    float64
} {
	return []struct {
		name string
		v    float64
	}{{"VmRSS KiB", s.rss}, {"open fds but pidfds", s.fds}, {"goroutines", s.goroutines}, {"fanotify marks", s.marks}, {"inotify watches", s.watches}}
}

// countFDs counts pid's descriptors, pidfds apart: the executable cache
// holds one for each of its entries (at most 1024), so they grow with the
// programs run until the cache is full, whatever the length of the run.
func countFDs(pid int) (fds, pidfds float64) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return -1, -1
	}
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && l == "anon_inode:[pidfd]" {
			pidfds++
		} else {
			fds++
		}
	}
	return fds, pidfds
}

// sampleQuiet reads the daemon three times a second apart and keeps the
// smallest of each (a reload or a container walk in flight is not a
// leak).
func sampleQuiet(d *daemon) soakSample {
	var best soakSample
	for i := 0; i < 3; i++ {
		if i > 0 {
			time.Sleep(time.Second)
		}
		m := d.metrics("go_goroutines", "fsmon_fanotify_marks", "fsmon_inotify_watches")
		fds, pidfds := countFDs(d.pid())
		s := soakSample{vmRSSKiB(d.pid()), fds, m["go_goroutines"], m["fsmon_fanotify_marks"], m["fsmon_inotify_watches"], pidfds}
		if i == 0 {
			best = s
			continue
		}
		best = soakSample{min(best.rss, s.rss), min(best.fds, s.fds), min(best.goroutines, s.goroutines), min(best.marks, s.marks), min(best.watches, s.watches), min(best.pidfds, s.pidfds)}
	}
	return best
}

func soakConfig(secret, neighbourDir, changes, openerPath string, extra bool) string {
	c := fmt.Sprintf(`profiles:
  - name: soak
    host: true
    mode: protect
    filters:
      - name: secret
        path: %q
        behavior: block
        allow: [%q]
      - name: changes
        path: %q
        recursive: true
  - name: containers
    containers: {name: "soak*"}
    filters:
      - name: etc
        path: /etc
        recursive: true
`, secret, openerPath, changes)
	if extra {
		c += fmt.Sprintf(`  - name: reloaded
    host: true
    filters:
      - name: neighbours
        path: %q
        regex: 'n[0-9]+'
`, neighbourDir)
	}
	return c
}

// soak runs the soak for dur and returns the process's exit code.
func soak(dur time.Duration, openerPath string) int {
	warm := min(dur/5, 2*time.Minute)
	prot := filepath.Join(tmpRoot, "soak-protected")
	changes := filepath.Join(fastRoot, "soak-changes")
	must(os.MkdirAll(prot, 0o755))
	must(os.MkdirAll(changes, 0o755))
	secret := filepath.Join(prot, "secret")
	must(os.WriteFile(secret, []byte("secret\n"), 0o644))
	for i := 0; i < 20; i++ {
		must(os.WriteFile(filepath.Join(prot, fmt.Sprintf("n%d", i)), []byte("neighbour\n"), 0o644))
	}
	// The denied opener: the same program at a path no allow entry names.
	denied := filepath.Join(tmpRoot, "denied-opener")
	b, err := os.ReadFile(openerPath)
	must(err)
	must(os.WriteFile(denied, b, 0o755))

	cfgPath := filepath.Join(tmpRoot, "soak.yml")
	writeCfg := func(extra bool) {
		tmp := cfgPath + ".new"
		must(os.WriteFile(tmp, []byte(soakConfig(secret, prot, changes, openerPath, extra)), 0o644))
		must(os.Rename(tmp, cfgPath))
	}
	writeCfg(false)
	ctrNote := "containers: on (a fake busybox container started every 3 s, at most 2 alive)"
	bb, bbErr := exec.LookPath("busybox")
	if _, err := exec.LookPath("unshare"); bbErr != nil || err != nil {
		ctrNote = "containers: off (no busybox or unshare)"
	}
	d := startDaemon(-1, "", "--config.file="+cfgPath, "--containers.scan-interval=500ms")
	progress("soak: %s, warm-up %s; %s", dur, warm, ctrNote)

	var paused atomic.Bool
	var stop atomic.Bool
	var busy atomic.Int32 // workers inside an iteration
	var wg sync.WaitGroup
	var ops struct{ allowed, denied, files, reloads, containers atomic.Int64 }
	loop := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if paused.Load() {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				busy.Add(1)
				if !paused.Load() {
					f()
				}
				busy.Add(-1)
			}
		}()
	}
	loop(func() {
		if _, eperm := openNs(-1, 2000, secret); eperm == 0 {
			ops.allowed.Add(2000 + 200)
		} else {
			fatalf("soak: the allowed opener got %d EPERM", eperm)
		}
	})
	loop(func() {
		out := run(time.Minute, -1, denied, "500", secret)
		_ = out
		ops.denied.Add(550)
		neighbour := filepath.Join(prot, "n"+strconv.Itoa(int(ops.denied.Load()/550%20)))
		run(time.Minute, -1, filepath.Join(*toolsDir, "opener"), "500", neighbour)
	})
	loop(func() {
		dir := filepath.Join(changes, "w")
		run(time.Minute, -1, filepath.Join(*toolsDir, "writer"), changes, "w", "500")
		ops.files.Add(500)
		_ = os.RemoveAll(dir)
		matches, _ := filepath.Glob(filepath.Join(changes, "w*"))
		for _, m := range matches {
			_ = os.Remove(m)
		}
		// a protected file changed in place, and a neighbour replaced
		_ = os.WriteFile(secret, []byte("secret "+time.Now().String()+"\n"), 0o644)
		n := filepath.Join(prot, "n0")
		_ = os.WriteFile(n+".tmp", []byte("neighbour\n"), 0o644)
		_ = os.Rename(n+".tmp", n)
	})
	extra := false
	loop(func() {
		time.Sleep(2 * time.Second)
		if paused.Load() || stop.Load() {
			return
		}
		extra = !extra
		writeCfg(extra)
		_ = syscall.Kill(d.pid(), syscall.SIGHUP)
		ops.reloads.Add(1)
	})
	var ctrMu sync.Mutex
	var alive []*fakeContainer
	stopContainers := func() {
		ctrMu.Lock()
		defer ctrMu.Unlock()
		for _, c := range alive {
			c.stop()
		}
		alive = nil
	}
	if bbErr == nil {
		roots := []string{filepath.Join(tmpRoot, "soak-c0"), filepath.Join(tmpRoot, "soak-c1")}
		for _, r := range roots {
			busyboxRoot(r, bb)
		}
		next := 0
		loop(func() {
			time.Sleep(3 * time.Second)
			if paused.Load() || stop.Load() {
				return
			}
			ctrMu.Lock()
			defer ctrMu.Unlock()
			if len(alive) == 2 {
				alive[0].stop()
				alive = alive[1:]
			}
			alive = append(alive, startContainer(roots[next%2], fmt.Sprintf("soak%d", next)))
			next++
			ops.containers.Add(1)
		})
	}
	quiet := func(what string) soakSample {
		paused.Store(true)
		stopContainers()
		// the last reload's configuration, without the extra profile
		writeCfg(false)
		_ = syscall.Kill(d.pid(), syscall.SIGHUP)
		deadline := time.Now().Add(time.Minute)
		for time.Now().Before(deadline) && (busy.Load() != 0 || d.metrics("fsmon_groups")["fsmon_groups"] != 1) {
			time.Sleep(200 * time.Millisecond)
		}
		// A gone container's marks go a little after the group count
		// says so: wait until the marks stop moving.
		prev := -1.0
		for time.Now().Before(deadline) {
			cur := d.metrics("fsmon_fanotify_marks")["fsmon_fanotify_marks"]
			if cur == prev {
				break
			}
			prev = cur
			time.Sleep(time.Second)
		}
		time.Sleep(3 * time.Second) // the reload and the scanner of early descriptors settle
		s := sampleQuiet(d)
		progress("soak: %s: rss %.0f KiB, fds %.0f (+%.0f pidfds), goroutines %.0f, marks %.0f, watches %.0f (groups %.0f, workers busy %d)", what, s.rss, s.fds, s.pidfds, s.goroutines, s.marks, s.watches, d.metrics("fsmon_groups")["fsmon_groups"], busy.Load())
		paused.Store(false)
		return s
	}
	began := time.Now()
	time.Sleep(warm)
	first := quiet("after warm-up")
	for time.Since(began) < dur {
		time.Sleep(min(30*time.Second, dur-time.Since(began)+time.Millisecond))
		progress("soak: %s of %s; rss %.0f KiB", time.Since(began).Round(time.Second), dur, vmRSSKiB(d.pid()))
	}
	last := quiet("end")
	paused.Store(true)
	// Whether marks left after the churn are late or left for good.
	time.Sleep(20 * time.Second)
	late := d.metrics(`fsmon_fanotify_marks{type="file"}`, `fsmon_fanotify_marks{type="dir"}`, `fsmon_fanotify_marks{type="filesystem"}`, "fsmon_groups")
	stop.Store(true)
	paused.Store(false)
	wg.Wait()
	stopContainers()
	m := d.metrics("fsmon_events_dropped_total", "fsmon_permission_decision_timeouts_total", "fsmon_kernel_queue_overflows_total", "fsmon_reload_failures_total")
	d.stop()

	w := os.Stdout
	fmt.Fprintf(w, "\nfsmon_exporter soak — %s — %s, %s (warm-up %s); load average at the end: %s\n", machine(), time.Now().UTC().Format("2006-01-02 15:04 UTC"), dur, warm, loadAvg())
	fmt.Fprintf(w, "mix: allowed opens %d, denied opens %d, neighbour opens, files created and removed %d, reloads %d, containers started %d; %s\n\n",
		ops.allowed.Load(), ops.denied.Load(), ops.files.Load(), ops.reloads.Load(), ops.containers.Load(), ctrNote)
	fmt.Fprintln(w, "| what | after warm-up | end | growth | limit |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---|")
	rc := 0
	for i, f := range first.fields() {
		l := last.fields()[i]
		g := 0.0
		if f.v > 0 {
			g = (l.v - f.v) / f.v
		}
		verdict := "ok"
		if g > 0.10 {
			verdict = "**grew**"
			rc = 1
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %+.1f%% | ≤ +10%%: %s |\n", f.name, f.v, l.v, 100*g, verdict)
	}
	verdict := "ok"
	if last.pidfds > 1024 {
		verdict = "**over the cache's 1024**"
		rc = 1
	}
	fmt.Fprintf(w, "| pidfds (executable cache entries, not compared) | %.0f | %.0f | | ≤ 1024: %s |\n", first.pidfds, last.pidfds, verdict)
	fmt.Fprintf(w, "\nfanotify marks 20 s after the end's quiet point: file %.0f, dir %.0f, filesystem %.0f (groups %.0f)\n",
		late[`fsmon_fanotify_marks{type="file"}`], late[`fsmon_fanotify_marks{type="dir"}`], late[`fsmon_fanotify_marks{type="filesystem"}`], late["fsmon_groups"])
	fmt.Fprintf(w, "\nevents dropped %.0f, default answers %.0f, kernel queue overflows %.0f, failed reloads %.0f\n",
		m["fsmon_events_dropped_total"], m["fsmon_permission_decision_timeouts_total"], m["fsmon_kernel_queue_overflows_total"], m["fsmon_reload_failures_total"])
	return rc
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil || len(b) < 14 {
		return "?"
	}
	return string(b[:14])
}
