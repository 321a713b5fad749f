package engine

import (
	"context"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/groups"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/marks"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/container"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/cri"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
	"github.com/fsmon/fsmon_exporter/fsmon/ocihook"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// group is the host or one container (groups.Group).
type group = groups.Group

// groupOf returns the group of a process: the container whose mount
// namespace it is in; for a mount namespace no group was made for, the
// container whose PID namespace it is in (groupOfForeign); else the host
// (processes of the host's PID namespace with mounts of their own, such
// as systemd services with private mounts, see the host's files).
// Membership is by namespace, recorded when the group was made: nothing
// a process can change after its start (its cgroup) moves it.
func (e *Engine) groupOf(pid int32) *group {
	var pb [64]byte
	p := append(pb[:0], e.opts.ProcRoot...)
	p = append(p, '/')
	p = strconv.AppendInt(p, int64(pid), 10)
	p = append(p, "/ns/mnt"...)
	var buf [64]byte
	n, err := unix.Readlink(proc.View(p), buf[:])
	if err != nil {
		return e.host
	}
	ns, ok := container.ParseNSLink(buf[:n])
	if !ok {
		return e.host
	}
	e.mu.RLock()
	g := e.groups[ns]
	e.mu.RUnlock()
	if g != nil {
		return g
	}
	if ns == e.selfNS || ns == e.hostNS || !e.containers.Load() {
		return e.host
	}
	return e.groupOfForeign(pid)
}

// groupOfForeign is the group of pid, in a mount namespace that no
// group was made for: the container whose PID namespace pid is in, or is
// in one below (a container with CAP_SYS_ADMIN can make mount and PID
// namespaces of its own; they stay its), else the host. Not remembered:
// the kernel gives a freed namespace's number to the next one at once,
// so a number says nothing of whose a namespace is after its first
// owner. It costs an open and a few ioctls, for the opens of files a
// container's rules cover by processes of such namespaces only.
func (e *Engine) groupOfForeign(pid int32) *group {
	fd, err := unix.Open(e.opts.ProcRoot+"/"+strconv.Itoa(int(pid))+"/ns/pid", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return e.host // gone
	}
	defer func() { unix.Close(fd) }()
	// Up the PID namespaces' parents (32 levels at most, the kernel's
	// bound) until a container's, or the daemon's own, past which the
	// kernel does not go (EPERM).
	for range 33 {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil {
			if g := e.groupOfPIDNS(st.Ino); g != nil {
				return g
			}
		}
		up, err := unix.IoctlRetInt(fd, unix.NS_GET_PARENT)
		if err != nil {
			break
		}
		unix.Close(fd)
		fd = up
	}
	return e.host
}

// groupOfPIDNS is the container whose init is in PID namespace ns, or
// nil.
func (e *Engine) groupOfPIDNS(ns uint64) *group {
	e.mu.RLock()
	defer e.mu.RUnlock()
	for _, g := range e.groups {
		if !g.IsHost() && g.PIDNS == ns {
			return g
		}
	}
	return nil
}

// discover keeps the container groups in step with the processes of the
// machine until ctx ends.
func (e *Engine) discover(ctx context.Context) {
	if e.opts.ContainerScan <= 0 {
		return
	}
	t := time.NewTicker(e.opts.ContainerScan)
	defer t.Stop()
	for {
		e.scanContainers()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-e.discoverNow:
		}
	}
}

// execSeen is told by the process table of every exec (on the table's
// goroutine: it must not block). An exec in a mount namespace no group
// has, and that is not the host's or the daemon's, may be a container's
// first program: the discovery scans at once rather than at its next
// tick, which shortens the time in which a new container's opens are
// not judged to the time a scan takes (make bench, scenario k). Where
// the runtime lets the daemon take part in the start (the OCI hook),
// there is no such time.
func (e *Engine) execSeen(_ int32, ns uint64) {
	if ns == 0 || ns == e.hostNS || ns == e.selfNS {
		return
	}
	e.mu.RLock()
	_, known := e.groups[ns]
	_, passed := e.unmonitored[ns]
	e.mu.RUnlock()
	if known || passed {
		return
	}
	select {
	case e.discoverNow <- struct{}{}:
	default: // one is asked for already
	}
}

// scanContainers adds groups for new containers and drops those of
// containers that are gone.
func (e *Engine) scanContainers() {
	nss, err := e.cfs.Namespaces()
	if err != nil {
		e.log.Warn("scanning /proc for containers", "err", err)
		return
	}
	pl := e.marks.Place()
	defer pl.Done()
	e.mu.RLock()
	p := e.policy
	var gone []*group
	for ns, g := range e.groups {
		if g.IsHost() {
			continue
		}
		if _, ok := nss[ns]; !ok || !e.finder.SameInit(g) {
			// Gone; or the namespace number came round again for a new
			// container (the kernel reuses them at once): a restarted
			// container must be walked afresh.
			gone = append(gone, g)
		}
	}
	e.mu.RUnlock()
	for _, g := range gone {
		e.dropGroup(pl, g)
	}
	e.mu.Lock()
	for ns := range e.unmonitored {
		if _, ok := nss[ns]; !ok {
			delete(e.unmonitored, ns)
		}
	}
	e.mu.Unlock()
	if p == nil {
		return
	}
	changed := len(gone) > 0
	inits := e.finder.Inits.ByPID()
	defer func() {
		if changed {
			e.noteCoverage()
		}
	}()
	for ns, pids := range nss {
		e.mu.RLock()
		_, known := e.groups[ns]
		at, seen := e.unmonitored[ns]
		e.mu.RUnlock()
		// A container passed over (no profile covers it) is looked at
		// again after a while.
		if known || seen && time.Since(at) < unmonitoredFor || ns == e.hostNS || ns == e.selfNS {
			continue
		}
		g := e.finder.Container(ns, pids, inits)
		if g == nil {
			continue // not a container's, or not yet: looked at each scan
		}
		if e.addGroup(pl, p, g, "scan") {
			changed = true
		}
	}
}

// addGroup watches the container of group g, new, if p's profiles
// cover it: its group, then its marks (a walk of its root). A container
// no profile covers is passed over for a while (unmonitoredFor). pl is
// held. found says how the engine learnt of it (scan, hook).
func (e *Engine) addGroup(pl marks.Placement, p *policy.Policy, g *group, found string) bool {
	g.Rules = p.RulesFor(g.Target())
	e.checkAllowPaths(g, g.Rules)
	if len(g.Rules) == 0 {
		unix.Close(g.RootFD)
		e.mu.Lock()
		e.unmonitored[g.NS] = time.Now()
		e.mu.Unlock()
		return false
	}
	e.mu.Lock()
	e.groups[g.NS] = g
	e.containers.Store(true)
	e.mu.Unlock()
	w := pl.Walk(pl.Live(), g, g.Rules)
	e.requestScan()
	e.facts.sync(g)
	e.log.Info("watching container", "container", g.Name, "id", g.ContainerID, "runtime", string(g.Runtime),
		"root_pid", g.RootPID, "rules", len(g.Rules), "unmarked", w.Errors, "found_by", found)
	return true
}

// StartContainer is told by the OCI hook of a container its runtime is
// starting, before its first program runs (ocihook.Starter): its group
// is made and its marks placed before this returns, and the hook lets
// the runtime go on only then. So the container's first open is judged.
// Its identity is the hook's (the runtime's own state, handed over by
// root on the host), fixed now; the scan passes the namespace over
// later, as it is known.
func (e *Engine) StartContainer(_ context.Context, st ocihook.State) error {
	g, err := e.finder.Starting(st.ID, st.PID, st.Bundle)
	if err != nil {
		return err
	}
	pl := e.marks.Place()
	defer pl.Done()
	e.mu.RLock()
	p := e.policy
	old, known := e.groups[g.NS]
	e.mu.RUnlock()
	if known && !old.IsHost() && !e.finder.SameInit(old) {
		// The kernel gave the number of a gone container's namespace
		// to this one at once, before a scan saw the first go.
		e.dropGroup(pl, old)
		known = false
	}
	if known || p == nil {
		unix.Close(g.RootFD)
		return nil
	}
	if e.addGroup(pl, p, g, "hook") {
		e.noteCoverage()
	}
	return nil
}

// unmonitoredFor is how long a namespace passed over stays passed over.
const unmonitoredFor = 10 * time.Second

// dropGroup forgets a container that is gone: its group, and its marks,
// watches and table entries (marks.DropGroup).
func (e *Engine) dropGroup(pl marks.Placement, g *group) {
	e.mu.Lock()
	delete(e.groups, g.NS)
	e.containers.Store(len(e.groups) > 1)
	e.allowGen.Add(1)
	e.mu.Unlock()
	dirs, files := pl.DropGroup(g)
	// The facts worker closes the root once it is done with the
	// group's changes still queued.
	e.facts.forget(g)
	e.log.Info("container gone", "container", g.Name, "id", g.ContainerID, "dirs", dirs, "files", files)
}

// runtimeSources are what tells who a container is: the CRI API of the
// Kubernetes runtimes (pods' labels are there only), then the runtimes'
// state files, both where the host's files are (groups.HostFiles).
func runtimeSources(opts Options) container.Source {
	root := groups.HostFiles(opts.ProcRoot)
	var ss container.Sources
	for _, s := range opts.CRISockets {
		ss = append(ss, cri.New(filepath.Join(root, s)))
	}
	return append(ss, container.StateFiles{Root: root})
}

// DefaultCRISockets are where containerd and CRI-O serve the CRI API.
var DefaultCRISockets = cri.DefaultSockets

// profileGroups counts, per profile of the policy in force (in its
// order, each listed, at 0 too), the groups it covers: those it has
// rules in. e.mu must be held.
func (e *Engine) profileGroups() []fsmon.ProfileGroups {
	if e.policy == nil {
		return nil
	}
	n := make(map[*policy.CompiledProfile]int, len(e.policy.Profiles))
	for _, g := range e.groups {
		var last *policy.CompiledProfile
		for _, r := range g.Rules {
			// A profile's rules are consecutive in a group's (RulesFor).
			if r.Profile != last {
				n[r.Profile]++
				last = r.Profile
			}
		}
	}
	out := make([]fsmon.ProfileGroups, 0, len(e.policy.Profiles))
	for _, p := range e.policy.Profiles {
		out = append(out, fsmon.ProfileGroups{Profile: p.Name, Groups: n[p]})
	}
	return out
}

// noteCoverage logs each profile that starts or stops covering any
// group (a profile of a new configuration that covers none, too): a
// selector that matches nothing, a typo in a name, leaves a workload
// unprotected, and this says so.
func (e *Engine) noteCoverage() {
	e.mu.RLock()
	now := e.profileGroups()
	e.mu.RUnlock()
	e.coverageMu.Lock()
	defer e.coverageMu.Unlock()
	next := make(map[string]int, len(now))
	for _, pg := range now {
		next[pg.Profile] = pg.Groups
		before, known := e.coverage[pg.Profile]
		switch {
		case pg.Groups > 0 && (!known || before == 0):
			e.log.Info("profile covers groups", "profile", pg.Profile, "groups", pg.Groups)
		case pg.Groups == 0 && (!known || before > 0):
			e.log.Info("profile covers no group: its selector matches no running container", "profile", pg.Profile)
		}
	}
	e.coverage = next
}

// DefaultGroupBudget is the default of Options.GroupBudget (and of
// --containers.max-objects): 16384 directories and files per container,
// a small share of the 1048576 of --watch.max-objects and of the inotify
// watches a machine gives a user (fs.inotify.max_user_watches, often
// 65536 to a million), so that tens of containers at their budget still
// leave the host room.
const DefaultGroupBudget = 16384
