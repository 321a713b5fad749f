package engine

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/procinfo"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// Descriptors opened before protection (docs/design/deny.md §3, "What it
// cannot close"). The kernel judges a file at open(2), and whether a
// descriptor produces per-read events is decided at open too: a
// descriptor opened before its file was marked (before the daemon
// started, while it was down, before a reload or a container's walk
// covered the file) keeps reading and writing whatever marks come later.
// Such descriptors cannot be denied; they are found and reported.
//
// After every placement of marks (Apply at start and reload, a
// container's walk) the scanner looks through /proc/*/fd/* and the
// mappings of /proc/*/maps for inodes the tables hold with rules that
// answer opens, judges each holder with policy.Judge as a decision
// would, and reports what the filter does not allow, once per
// (process, descriptor, file): event "violation" (or what the mode makes
// of an outsider: "learned" in learn mode, "access" for report_access)
// with op "open" and reason "opened before protection". The gauge
// fsmon_unjudged_descriptors{profile,filter} is what the last scan
// found. While it is above 0 the scan runs again every earlyRescan, so
// that the gauge falls once the holders are restarted.
//
// The scan runs on a goroutine of its own: reading a process's maps or
// command line takes its memory lock, which a process can hold for long
// (a fault on a hung file system). Nothing else waits for it; requests
// made meanwhile are coalesced into one more scan. The stat of a
// descriptor is statx with AT_STATX_DONT_SYNC, which asks no server.

// earlyRescan is how often the scan runs again while it finds any.
const earlyRescan = 30 * time.Second

// heldKey is one descriptor of one file held by one process; fd is -1
// for a mapping without a descriptor.
type heldKey struct {
	pid int32
	fd  int32
	id  devIno
}

type filterKey struct{ profile, filter string }

// earlyScan is the scanner's state.
type earlyScan struct {
	req chan struct{} // one slot: requests made during a scan coalesce

	mu     sync.Mutex
	counts []fsmon.FilterCount // of the last scan, for Snapshot
	scans  uint64              // scans done, for tests
	closed bool                // the report queue is closing: report nothing more

	// The scanner goroutine's own.
	reported map[heldKey]struct{} // reported and still held at the last scan
	allow    allowIDs             // apart from the permission loop's, which is its alone
	d        decision             // scratch for judging a holder
}

func newEarlyScan() earlyScan {
	return earlyScan{req: make(chan struct{}, 1), reported: map[heldKey]struct{}{}}
}

// requestScan asks for a scan of /proc for descriptors opened before
// protection; it never waits.
func (e *Engine) requestScan() {
	select {
	case e.early.req <- struct{}{}:
	default:
	}
}

// unjudged is the last scan's count per filter.
func (e *Engine) unjudged() []fsmon.FilterCount {
	e.early.mu.Lock()
	defer e.early.mu.Unlock()
	return append([]fsmon.FilterCount(nil), e.early.counts...)
}

// earlyScans is how many scans have finished.
func (e *Engine) earlyScans() uint64 {
	e.early.mu.Lock()
	defer e.early.mu.Unlock()
	return e.early.scans
}

// scanLoop scans when asked, and again every earlyRescan while the last
// scan found any, until ctx ends.
func (e *Engine) scanLoop(ctx context.Context) {
	var again <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.early.req:
		case <-again:
		}
		found := e.scanDescriptors()
		again = nil
		if found > 0 {
			again = time.After(earlyRescan)
		}
	}
}

// scanDescriptors looks through every process's descriptors and
// mappings once, reports what is new, sets the counts and returns how
// many it found.
func (e *Engine) scanDescriptors() int {
	began := time.Now()
	counts := map[filterKey]int{}
	var order []filterKey
	e.mu.RLock()
	for _, g := range e.groups {
		for _, r := range g.Rules {
			k := filterKey{r.Profile.Name, r.Name}
			if _, ok := counts[k]; !ok && r.WantsOpens() {
				counts[k] = 0
				order = append(order, k)
			}
		}
	}
	e.mu.RUnlock()
	held := map[heldKey]struct{}{}
	procs, _ := os.ReadDir(e.opts.ProcRoot)
	var rules []grule
	for _, pe := range procs {
		pid64, err := strconv.ParseInt(pe.Name(), 10, 32)
		if err != nil || int32(pid64) == e.selfPID {
			continue
		}
		pid := int32(pid64)
		base := e.opts.ProcRoot + "/" + pe.Name()
		e.eachHeld(pid, base, func(fd int32, id devIno, at string) {
			if rules = e.fileRules(id, rules[:0]); len(rules) == 0 {
				return
			}
			if e.containers.Load() {
				// As the loop: a container's rules judge its own.
				if rules = e.ownRules(pid, rules); len(rules) == 0 {
					return
				}
			}
			out := e.judgeHolder(pid, rules)
			if out.Kind == 0 {
				return
			}
			r := rules[out.Rule]
			k := filterKey{r.Profile.Name, r.Name}
			if _, ok := counts[k]; !ok {
				order = append(order, k)
			}
			counts[k]++
			key := heldKey{pid, fd, id}
			held[key] = struct{}{}
			if _, done := e.early.reported[key]; !done {
				e.reportHeld(pid, at, out.Kind, r)
			}
		})
	}
	newOnes := 0
	for k := range held {
		if _, ok := e.early.reported[k]; !ok {
			newOnes++
		}
	}
	e.early.reported = held
	if newOnes > 0 {
		e.log.Warn("descriptors of protected files opened before protection are held by processes their filters do not allow; their reads cannot be denied (restart those processes; events with reason \"opened before protection\" name them)",
			"new", newOnes, "held", len(held))
	}
	e.log.Debug("scanned /proc for descriptors opened before protection", "processes", len(procs), "held", len(held), "took", time.Since(began))
	out := make([]fsmon.FilterCount, 0, len(order))
	for _, k := range order {
		out = append(out, fsmon.FilterCount{Profile: k.profile, Filter: k.filter, Count: counts[k]})
	}
	e.early.mu.Lock()
	e.early.counts = out
	e.early.scans++
	e.early.mu.Unlock()
	return len(held)
}

// eachHeld calls fn for every descriptor of pid that can read or write
// (O_PATH ones cannot: reopening one through /proc is an open, judged),
// and once for every file pid maps, with the identity of the file and
// the path of its link in /proc (to read the file's name from).
func (e *Engine) eachHeld(pid int32, base string, fn func(fd int32, id devIno, link string)) {
	fdDir := base + "/fd/"
	if fds, err := os.ReadDir(fdDir); err == nil {
		for _, f := range fds {
			n, err := strconv.ParseInt(f.Name(), 10, 32)
			if err != nil {
				continue
			}
			link := fdDir + f.Name()
			id, ok := statLink(link)
			if !ok || pathOnly(base+"/fdinfo/"+f.Name()) {
				continue
			}
			fn(int32(n), id, link)
		}
	}
	// Mappings: a file mapped and its descriptor closed still reads. One
	// stat per file, not per mapping (a library has several).
	maps, err := os.Open(base + "/maps")
	if err != nil {
		return
	}
	defer maps.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(maps)
	for sc.Scan() {
		// start-end perms offset dev inode path
		f := bytes.Fields(sc.Bytes())
		if len(f) < 6 || string(f[4]) == "0" {
			continue
		}
		devIno := string(f[3]) + " " + string(f[4])
		if seen[devIno] {
			continue
		}
		seen[devIno] = true
		link := base + "/map_files/" + mapFilesName(f[0])
		if id, ok := statLink(link); ok {
			fn(-1, id, link)
		}
	}
}

// mapFilesName is the name of a mapping's link in /proc/PID/map_files:
// its range as maps prints it, but without maps' zero padding
// ("00400000-00452000" is "400000-452000" there).
func mapFilesName(r []byte) string {
	lo, hi, ok := bytes.Cut(r, []byte{'-'})
	a, err1 := strconv.ParseUint(string(lo), 16, 64)
	b, err2 := strconv.ParseUint(string(hi), 16, 64)
	if !ok || err1 != nil || err2 != nil {
		return string(r)
	}
	return strconv.FormatUint(a, 16) + "-" + strconv.FormatUint(b, 16)
}

// statLink is the identity of the file a /proc link names, as fstat of a
// permission event's fd gives it. AT_STATX_DONT_SYNC: no file system is
// asked (an NFS server that does not answer must not stop the scan).
func statLink(link string) (devIno, bool) {
	var sx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, link, unix.AT_STATX_DONT_SYNC, unix.STATX_TYPE|unix.STATX_INO, &sx); err != nil {
		return devIno{}, false
	}
	if sx.Mode&unix.S_IFMT != unix.S_IFREG {
		return devIno{}, false
	}
	return devIno{unix.Mkdev(sx.Dev_major, sx.Dev_minor), sx.Ino}, true
}

// pathOnly reports whether the fdinfo file says the descriptor is O_PATH.
func pathOnly(fdinfo string) bool {
	b, err := os.ReadFile(fdinfo)
	if err != nil {
		return true // gone since: nothing to report
	}
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		if v, ok := bytes.CutPrefix(line, []byte("flags:")); ok {
			fl, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 8, 64)
			return err == nil && fl&unix.O_PATH != 0
		}
	}
	return false
}

// judgeHolder is policy.Judge for a process that holds a covered file,
// with the facts a decision would learn of an opener; the scanner's own
// allow cache, since the permission loop's is the loop's alone.
func (e *Engine) judgeHolder(pid int32, rules []grule) policy.Outcome {
	d := &e.early.d
	// Not Cached: the executable cache is the loop's.
	d.facts = facts{who: procinfo.Opener{PID: pid}}
	out := e.judgeRules(rules, d, &e.early.allow)
	return out
}

// reportHeld reports a descriptor of a covered file that pid holds and
// the filter r does not allow. Nothing denied it: a protect-mode
// outsider is a violation, not a denial.
func (e *Engine) reportHeld(pid int32, link string, k fsmon.Kind, r grule) {
	if k == fsmon.KindDenied {
		k = fsmon.KindViolation
	}
	g := e.host
	if e.containers.Load() {
		g = e.groupOf(pid)
	}
	who := procinfo.Opener{PID: pid}
	p := e.who.Report(&who, &e.early.d.bufs)
	p.ExecutablePath = g.Inside(p.ExecutablePath)
	e.completeProcess(g, &p)
	path, _ := os.Readlink(link)
	ev := fsmon.Event{
		Time:      time.Now(),
		Kind:      k,
		Op:        fsmon.OpOpen,
		Mode:      r.Mode,
		Profile:   r.Profile.Name,
		Filter:    r.Name,
		Path:      g.Inside(path),
		Process:   p,
		Container: g.Container(),
		Count:     1,
		Reason:    fsmon.ReasonOpenedBefore,
	}
	e.early.mu.Lock()
	if !e.early.closed {
		e.enqueue(&ev)
	}
	e.early.mu.Unlock()
}

// stopScans ends the scanner's reports before the report queue closes:
// it waits for the scanner (done) a little, and past that leaves a scan
// stuck in /proc behind without its reports.
func (e *Engine) stopScans(done <-chan struct{}) {
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		e.log.Warn("the scan for descriptors opened before protection is stuck in /proc; stopping without it")
	}
	e.early.mu.Lock()
	e.early.closed = true
	e.early.mu.Unlock()
}
