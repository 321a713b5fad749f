package main

// Scenario e, per additional container: the daemon with the embedded
// default (which covers the host and every container) discovers fake
// containers, walks their roots, and forgets them when they exit.
//
// A fake container is what fsmon/engine/container_test.go builds: a
// busybox root file system, a process in new mount and PID namespaces
// whose root is that file system (unshare --root), in a cgroup shaped
// like Docker's (system.slice/docker-<64 hex>.scope), named by a Docker
// state file (config.v2.json) as Docker names its containers.

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	cgroupMu sync.Mutex
	cgroups  []string // made by the suite, removed on every way out (deepest last made, first removed)
)

// addCgroup makes dir (and records every directory it had to make).
func addCgroup(dir string) error {
	var made []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		made = append(made, d)
	}
	cgroupMu.Lock()
	defer cgroupMu.Unlock()
	for i := len(made) - 1; i >= 0; i-- {
		if err := os.Mkdir(made[i], 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		cgroups = append(cgroups, made[i])
	}
	return nil
}

// rmCgroup removes dir once its processes are gone (rmdir fails with
// EBUSY while a reparented init is not reaped yet).
func rmCgroup(dir string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			break
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "fsmon-bench: cannot remove cgroup %s: %v\n", dir, err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	cgroupMu.Lock()
	defer cgroupMu.Unlock()
	for i, d := range cgroups {
		if d == dir {
			cgroups = append(cgroups[:i], cgroups[i+1:]...)
			break
		}
	}
}

// removeCgroups removes what is left of the suite's cgroups, the last
// made first; the processes in them must have been killed.
func removeCgroups() {
	cgroupMu.Lock()
	left := append([]string(nil), cgroups...)
	cgroupMu.Unlock()
	for i := len(left) - 1; i >= 0; i-- {
		rmCgroup(left[i])
	}
}

// cgroupParent is where a Docker-shaped cgroup goes: the v2 hierarchy at
// /sys/fs/cgroup/unified (hybrid layout), else at /sys/fs/cgroup.
func cgroupParent() string {
	if st, err := os.Stat("/sys/fs/cgroup/unified"); err == nil && st.IsDir() {
		return "/sys/fs/cgroup/unified/system.slice"
	}
	return "/sys/fs/cgroup/system.slice"
}

// busyboxRoot makes a small root file system in dir: /bin with its own
// copy of busybox (its own inode, as a container's image layer has) and
// a few applets, /etc with passwd, shadow and hosts.
func busyboxRoot(dir, busybox string) {
	for _, d := range []string{"bin", "etc", "proc", "tmp"} {
		must(os.MkdirAll(filepath.Join(dir, d), 0o755))
	}
	b, err := os.ReadFile(busybox)
	must(err)
	must(os.WriteFile(filepath.Join(dir, "bin", "busybox"), b, 0o755))
	for _, a := range []string{"sh", "sleep", "cat", "echo", "ls"} {
		must(os.Symlink("busybox", filepath.Join(dir, "bin", a)))
	}
	must(os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "etc", "shadow"), []byte("root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n"), 0o640))
	must(os.WriteFile(filepath.Join(dir, "etc", "hosts"), []byte("127.0.0.1 localhost\n"), 0o644))
}

type fakeContainer struct {
	c       *exec.Cmd
	cgroup  string
	state   string    // its Docker state directory, which names it
	started time.Time // its init is running, in its namespaces and cgroup
}

// startContainer starts a container whose init sleeps: a shell joins the
// cgroup, then becomes unshare, whose child is the container's PID 1 in
// root. All of it is one process group of the suite's; --kill-child
// takes the init down with unshare if the suite dies.
func startContainer(root, name string) *fakeContainer {
	id := make([]byte, 32)
	_, err := rand.Read(id)
	must(err)
	fc := &fakeContainer{cgroup: filepath.Join(cgroupParent(), "docker-"+hex.EncodeToString(id)+".scope"),
		state: filepath.Join("/var/lib/docker/containers", hex.EncodeToString(id))}
	if err := addCgroup(fc.cgroup); err != nil {
		fatalf("cannot make a cgroup (%v)", err)
	}
	// The daemon names containers by what their runtime says, never by
	// their HOSTNAME.
	must(os.MkdirAll(fc.state, 0o700))
	must(os.WriteFile(filepath.Join(fc.state, "config.v2.json"), []byte(`{"Name":"/`+name+`","Config":{}}`), 0o600))
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs && exec unshare --mount --pid --fork --kill-child --mount-proc --root=%s /bin/sh -c 'echo started; exec sleep 600'`, fc.cgroup, root)
	fc.c = command(context.Background(), -1, "sh", "-c", script)
	fc.c.Env = []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin", "HOSTNAME=" + name}
	fc.c.Stderr = os.Stderr
	out, err := fc.c.StdoutPipe()
	must(err)
	if err := fc.c.Start(); err != nil {
		fatalf("container %s: %v", name, err)
	}
	track(fc.c)
	if l, err := firstLine(bufio.NewReader(out), "started", 10*time.Second); err != nil {
		fc.stop()
		fatalf("container %s: %v (%q)", name, err, l)
	}
	fc.started = time.Now()
	return fc
}

// kill kills the container's process group; wait reaps it and removes
// its cgroup.
func (fc *fakeContainer) kill() { _ = syscall.Kill(-fc.c.Process.Pid, syscall.SIGKILL) }

func (fc *fakeContainer) wait() {
	_ = fc.c.Wait()
	untrack(fc.c)
	rmCgroup(fc.cgroup)
	_ = os.RemoveAll(fc.state)
}

func (fc *fakeContainer) stop() { fc.kill(); fc.wait() }

// cpuNs is the CPU time of every thread of pid, in ns, from
// /proc/PID/task/*/schedstat (USER_HZ ticks of /proc/PID/stat are too
// coarse for one walk of a small root); -1 if it cannot be read.
func cpuNs(pid int) float64 {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return -1
	}
	var sum float64
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue // a thread that just exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			return -1
		}
		v, _ := strconv.ParseFloat(f[0], 64)
		sum += v
	}
	return sum
}

// ctrRun is one run of the container scenario; figures are per
// container.
type ctrRun struct {
	rssKiB, marks, watches float64
	watchedMs              []float64 // container started to the daemon's "watching container" (its walk done)
	walkCPUms              float64   // daemon CPU of the add phase, minus the idle rate, per container
	scanCPUus              float64   // added CPU of the idle /proc scans, µs per scan and container
	goneMs                 float64   // all killed to fsmon_groups back at its baseline
	leftMarks, leftWatches float64   // after cleanup, minus before
	foreign                []string  // other containers the daemon saw meanwhile: the run does not count
	missed                 int       // containers of the suite never watched (the run ends there)
	dirs, files            float64   // tracked, from the daemon's own count at "container gone"
}

const (
	mGroups  = "fsmon_groups"
	mMarks   = "fsmon_fanotify_marks"
	mWatches = "fsmon_inotify_watches"
	ctrScan  = 200 * time.Millisecond
	ctrPoll  = 5 * time.Millisecond // of the daemon's log (the suite's CPU, not the daemon's)
)

// logTail follows the daemon's log for its container lines.
type logTail struct {
	f       *os.File
	partial string
	watched map[string]time.Time // container name -> time of "watching container"
	gone    map[string]time.Time
	tracked map[string][2]float64 // container name -> dirs, files of its "container gone"
}

var (
	timeRe = regexp.MustCompile(`(?:^|\s)time=(\S+)`)
	nameRe = regexp.MustCompile(`\scontainer=("(?:[^"\\]|\\.)*"|\S+)`)
	dirsRe = regexp.MustCompile(`\sdirs=(\d+)\s+files=(\d+)`)
)

func newLogTail(path string) *logTail {
	f, err := os.Open(path)
	must(err)
	return &logTail{f: f, watched: map[string]time.Time{}, gone: map[string]time.Time{}, tracked: map[string][2]float64{}}
}

// poll reads what the daemon logged since the last poll.
func (t *logTail) poll() {
	b, _ := io.ReadAll(t.f)
	lines := strings.Split(t.partial+string(b), "\n")
	t.partial = lines[len(lines)-1]
	for _, l := range lines[:len(lines)-1] {
		var m map[string]time.Time
		switch {
		case strings.Contains(l, `msg="watching container"`):
			m = t.watched
		case strings.Contains(l, `msg="container gone"`):
			m = t.gone
		default:
			continue
		}
		nm := nameRe.FindStringSubmatch(l)
		if nm == nil {
			continue
		}
		name := nm[1]
		if u, err := strconv.Unquote(name); err == nil {
			name = u
		}
		at := time.Now()
		if tm := timeRe.FindStringSubmatch(l); tm != nil {
			if v, err := time.Parse(time.RFC3339Nano, tm[1]); err == nil {
				at = v
			}
		}
		m[name] = at
		if df := dirsRe.FindStringSubmatch(l); df != nil {
			dirs, _ := strconv.ParseFloat(df[1], 64)
			files, _ := strconv.ParseFloat(df[2], 64)
			t.tracked[name] = [2]float64{dirs, files}
		}
	}
}

// waitFor polls until m (t.watched or t.gone) has name, for at most
// limit.
func (t *logTail) waitFor(m map[string]time.Time, name string, limit time.Duration) (time.Time, bool) {
	end := time.Now().Add(limit)
	for {
		t.poll()
		if at, ok := m[name]; ok {
			return at, true
		}
		if time.Now().After(end) {
			return time.Time{}, false
		}
		time.Sleep(ctrPoll)
	}
}

// idleRate returns the daemon's CPU ns per second over dur.
func idleRate(d *daemon, dur time.Duration) float64 {
	c0, t0 := cpuNs(d.pid()), time.Now()
	time.Sleep(dur)
	return (cpuNs(d.pid()) - c0) / time.Since(t0).Seconds()
}

// waitGroups polls fsmon_groups every 20 ms until it is want, for at
// most limit.
func waitGroups(d *daemon, want float64, limit time.Duration) bool {
	end := time.Now().Add(limit)
	for {
		if d.metrics(mGroups)[mGroups] == want {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var ctrSeq int

// containersRun starts the daemon with the embedded default and a 200 ms
// scan, then starts the containers one at a time, each at a random point
// of the scan period after the last one is watched, then kills them all
// at once.
func containersRun(roots []string) ctrRun {
	var r ctrRun
	n := float64(len(roots))
	ctrSeq++
	prefix := fmt.Sprintf("fsmon-bench-%d-%d-", os.Getpid(), ctrSeq)
	d := startDaemon(-1, "", "--containers.scan-interval="+ctrScan.String(), "--log.level=info")
	defer d.stop()
	lt := newLogTail(d.log)
	defer lt.f.Close()
	time.Sleep(500 * time.Millisecond) // the first scans, the heap after the walk
	m0 := d.metrics(mGroups, mMarks, mWatches)
	rss0 := vmRSSKiB(d.pid())
	lt.poll() // containers already there (part of the baseline) are not counted as others
	clear(lt.watched)
	clear(lt.gone)
	clear(lt.tracked)
	idle0 := idleRate(d, 1500*time.Millisecond)

	var cs []*fakeContainer
	defer func() {
		for _, c := range cs {
			c.kill()
		}
		for _, c := range cs {
			c.wait()
		}
	}()
	c0, t0 := cpuNs(d.pid()), time.Now()
	for i, root := range roots {
		time.Sleep(time.Duration(mrand.Int64N(int64(ctrScan))))
		name := fmt.Sprintf("%s%02d", prefix, i)
		c := startContainer(root, name)
		cs = append(cs, c)
		at, ok := lt.waitFor(lt.watched, name, 5*time.Second)
		if !ok {
			// Seen so far only when other users' namespaces came and went
			// meanwhile: a mount namespace's inode number is reused at
			// once, and the daemon knows namespaces by that number.
			r.foreign = append(r.foreign, fmt.Sprintf("container %d of %d not watched within 5s (fsmon_groups %v, %v before)",
				i+1, len(roots), d.metrics(mGroups)[mGroups], m0[mGroups]))
			r.missed++
			return r
		}
		r.watchedMs = append(r.watchedMs, at.Sub(c.started).Seconds()*1000)
	}
	tEnd, cAdd := time.Now(), cpuNs(d.pid())-c0
	var present float64 // container-seconds in the add phase, for the scans' share
	for _, c := range cs {
		present += tEnd.Sub(c.started).Seconds()
	}
	if !waitGroups(d, m0[mGroups]+n, 5*time.Second) {
		r.foreign = append(r.foreign, fmt.Sprintf("fsmon_groups %v with %v containers of the suite, %v before", d.metrics(mGroups)[mGroups], n, m0[mGroups]))
	}

	time.Sleep(500 * time.Millisecond)
	m1 := d.metrics(mGroups, mMarks, mWatches)
	rss1 := vmRSSKiB(d.pid())
	idle1 := idleRate(d, 1500*time.Millisecond)
	r.rssKiB = (rss1 - rss0) / n
	r.marks = (m1[mMarks] - m0[mMarks]) / n
	r.watches = (m1[mWatches] - m0[mWatches]) / n
	r.scanCPUus = (idle1 - idle0) / n / (float64(time.Second) / float64(ctrScan)) / 1e3
	// The add phase's CPU less what the daemon spends idle, and less the
	// scans' added cost of the containers already there.
	r.walkCPUms = (cAdd - idle0*tEnd.Sub(t0).Seconds() - (idle1-idle0)/n*present) / n / 1e6

	tk := time.Now()
	for _, c := range cs {
		c.kill()
	}
	// Back: every container of the suite logged gone and fsmon_groups at
	// its baseline (others' containers coming or going make the run
	// disturbed, not failed).
	allGone := func() bool {
		lt.poll()
		for i := range roots {
			if _, ok := lt.gone[fmt.Sprintf("%s%02d", prefix, i)]; !ok {
				return false
			}
		}
		return true
	}
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if allGone() && d.metrics(mGroups)[mGroups] == m0[mGroups] {
			r.goneMs = time.Since(tk).Seconds() * 1000
			break
		}
		if time.Now().After(end) {
			if !allGone() {
				fatalf("the suite's containers not all gone from the daemon within 10s of their exit (fsmon_groups %v, %v before)", d.metrics(mGroups)[mGroups], m0[mGroups])
			}
			r.foreign = append(r.foreign, fmt.Sprintf("fsmon_groups %v after the suite's containers left, %v before", d.metrics(mGroups)[mGroups], m0[mGroups]))
			break
		}
	}
	for _, c := range cs {
		c.wait()
	}
	cs = nil
	time.Sleep(300 * time.Millisecond)
	m2 := d.metrics(mGroups, mMarks, mWatches)
	r.leftMarks, r.leftWatches = m2[mMarks]-m0[mMarks], m2[mWatches]-m0[mWatches]
	lt.poll()
	for _, m := range []map[string]time.Time{lt.watched, lt.gone} {
		for name := range m {
			if !strings.HasPrefix(name, prefix) {
				r.foreign = append(r.foreign, name)
			}
		}
	}
	if m2[mGroups] != m0[mGroups] {
		r.foreign = append(r.foreign, fmt.Sprintf("fsmon_groups %v before, %v after", m0[mGroups], m2[mGroups]))
	}
	for i := 0; i < len(roots); i++ {
		name := fmt.Sprintf("%s%02d", prefix, i)
		if _, ok := lt.gone[name]; !ok {
			r.foreign = append(r.foreign, fmt.Sprintf("no \"container gone\" for %s", name))
		}
		r.dirs += lt.tracked[name][0] / n
		r.files += lt.tracked[name][1] / n
	}
	logf("containers: +%.0f KiB, +%.1f marks, +%.1f watches, watched after %.0f ms (median), walk %.2f ms CPU, scan %.1f µs, gone after %.0f ms, left %v marks %v watches (per container; idle %.2f → %.2f ms/s); disturbed by %v",
		r.rssKiB, r.marks, r.watches, median(r.watchedMs), r.walkCPUms, r.scanCPUus, r.goneMs, r.leftMarks, r.leftWatches, idle0/1e6, idle1/1e6, r.foreign)
	return r
}

// containers runs the scenario runs times with n containers, their roots
// made once in dir. A run during which the daemon saw containers other
// than the suite's (another user's tests on the machine: the embedded
// default covers every container) is repeated, up to 3 more runs; the
// note says how many were set aside.
func containers(dir string, n, runs int) (rs []ctrRun, note string) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return nil, "skipped: no busybox (Debian package busybox-static)"
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		return nil, "skipped: no unshare (util-linux)"
	}
	if cpuNs(os.Getpid()) < 0 {
		return nil, "skipped: no /proc/PID/task/TID/schedstat"
	}
	var roots []string
	for i := 0; i < n; i++ {
		root := filepath.Join(dir, fmt.Sprintf("c%02d", i))
		busyboxRoot(root, bb)
		roots = append(roots, root)
	}
	var disturbed []ctrRun
	for a := 0; len(rs) < runs && a < runs+3; a++ {
		progress("start-up: %d containers, run %d of %d", n, len(rs)+1, runs)
		r := containersRun(roots)
		if len(r.foreign) > 0 {
			progress("start-up: containers: the daemon saw others meanwhile (%s): run set aside", strings.Join(r.foreign, ", "))
			disturbed = append(disturbed, r)
			continue
		}
		rs = append(rs, r)
	}
	missed := 0
	for _, r := range disturbed {
		missed += r.missed
	}
	if len(disturbed) > 0 {
		note = fmt.Sprintf("%d run(s) set aside: the daemon saw containers other than the suite's meanwhile", len(disturbed))
		if missed > 0 {
			note += fmt.Sprintf("; containers of the suite never watched (a mount namespace number reused): %d", missed)
		}
	}
	if len(rs) == 0 {
		for _, r := range disturbed {
			if r.missed == 0 {
				rs = append(rs, r)
			}
		}
		if len(rs) > 0 {
			note += fmt.Sprintf("; no run undisturbed: THESE FIGURES ARE FROM %d DISTURBED RUN(S) (others' containers counted in)", len(rs))
		}
	} else if len(rs) < runs {
		note += fmt.Sprintf("; %d of %d runs undisturbed, the figures are theirs", len(rs), runs)
	}
	return rs, note
}

// reportContainers writes the per-container row of the start-up table
// and the table of its figures.
func reportContainers(w io.Writer, rs []ctrRun, note string) {
	if len(rs) == 0 {
		fmt.Fprintf(w, "| per additional container | — | %s | |\n\n", note)
		return
	}
	get := func(f func(ctrRun) float64) float64 {
		var v []float64
		for _, r := range rs {
			v = append(v, f(r))
		}
		return median(v)
	}
	var watched []float64
	for _, r := range rs {
		watched = append(watched, r.watchedMs...)
	}
	rss := get(func(r ctrRun) float64 { return r.rssKiB })
	fmt.Fprintf(w, "| per additional container (%d fake containers, scan every %v): start to watched, added | %d | %.0f | %+.2f |\n\n",
		*nCtr, ctrScan, len(rs), median(watched), rss/1024)
	fmt.Fprintf(w, "Per additional container: the embedded default with --containers.scan-interval=%v; %d fake containers (each its own busybox root with /bin and /etc, new mount and PID namespaces, a Docker-shaped cgroup) started one at a time at a random point of the scan period, then all killed at once; medians of %d runs, each a fresh daemon. Watched: the daemon's \"watching container\" log line (its walk done). CPU: the daemon's schedstat, minus its idle rate and the scans' added cost\n\n",
		ctrScan, *nCtr, len(rs))
	lo, hi := spread(watched)
	fmt.Fprintln(w, "| added VmRSS, KiB | added fanotify marks | added inotify watches | dirs, files tracked (daemon's log) | start to watched, ms (median, range) | daemon CPU per container walk, ms | added idle /proc scan CPU, µs per scan | all stopped to fsmon_groups back, ms | marks, watches left after |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	fmt.Fprintf(w, "| %.0f | %.1f | %.1f | %.1f, %.1f | %.0f (%.0f–%.0f) | %.2f | %.1f | %.0f | %.0f, %.0f |\n\n",
		rss, get(func(r ctrRun) float64 { return r.marks }), get(func(r ctrRun) float64 { return r.watches }),
		get(func(r ctrRun) float64 { return r.dirs }), get(func(r ctrRun) float64 { return r.files }),
		median(watched), lo, hi, get(func(r ctrRun) float64 { return r.walkCPUms }),
		get(func(r ctrRun) float64 { return r.scanCPUus }), get(func(r ctrRun) float64 { return r.goneMs }),
		get(func(r ctrRun) float64 { return r.leftMarks }), get(func(r ctrRun) float64 { return r.leftWatches }))
	if note != "" {
		fmt.Fprintf(w, "(%s)\n\n", note)
	}
}
