package engine

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/container"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// group is the host or one container: a mount namespace with its own
// root, in which every path of its profiles is resolved and marked.
type group struct {
	name        string // "host", or the container's name, or its short id
	containerID string // full id; "" for the host
	image       string
	runtime     container.Runtime
	ns          uint64 // mount namespace inode
	rootPID     int32
	rootStart   uint64 // start time of rootPID: with it, the container's identity
	// rootFD is an O_PATH fd of the group's root (/proc/PID/root):
	// every path of the group is opened below it with RESOLVE_IN_ROOT,
	// so nothing a container holds can lead the daemon out of it.
	rootFD int
	// prefix is what the daemon's view of the group's paths starts with
	// when its root is a directory of the daemon's (a chroot); paths are
	// reported without it. "" for the host and for pivot_root'ed roots.
	prefix string
	rules  []*policy.Rule
}

func (g *group) isHost() bool { return g.containerID == "" }

func (g *group) container() fsmon.Container {
	if g == nil || g.isHost() {
		return fsmon.Container{}
	}
	return fsmon.Container{ID: g.containerID, Name: g.name}
}

// inside turns a path as the daemon sees it into the path as the
// group's processes see it.
func (g *group) inside(p string) string {
	if g == nil || g.prefix == "" {
		return p
	}
	if rest, ok := strings.CutPrefix(p, g.prefix); ok && (rest == "" || rest[0] == '/') {
		if rest == "" {
			return "/"
		}
		return rest
	}
	return p
}

// openRoot opens /proc/PID/root and works out the prefix.
func openRoot(procRoot string, pid int32) (int, string, error) {
	p := procRoot + "/" + strconv.Itoa(int(pid)) + "/root"
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("opening %s: %w", p, err)
	}
	prefix := fsys.Path(fd)
	if prefix == "/" {
		prefix = ""
	}
	return fd, prefix, nil
}

// target is the group as profile selection sees it.
func (g *group) target() policy.Target {
	if g.isHost() {
		return policy.Target{Host: true}
	}
	return policy.Target{Name: g.name, ID: g.containerID, Image: g.image}
}

// groupOf returns the group of a process: the container whose mount
// namespace it is in, else the host (processes of other namespaces
// without a container id, such as systemd services with private mounts,
// see the host's files).
func (e *Engine) groupOf(pid int32) *group {
	var pb [64]byte
	p := append(pb[:0], e.opts.ProcRoot...)
	p = append(p, '/')
	p = strconv.AppendInt(p, int64(pid), 10)
	p = append(p, "/ns/mnt"...)
	var buf [64]byte
	n, err := unix.Readlink(unsafeString(p), buf[:])
	e.mu.RLock()
	defer e.mu.RUnlock()
	if err == nil {
		if ns, ok := container.ParseNSLink(buf[:n]); ok {
			if g := e.groups[ns]; g != nil {
				return g
			}
		}
	}
	return e.host
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
		}
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
	e.applyMu.Lock()
	defer e.applyMu.Unlock()
	e.mu.RLock()
	p := e.policy
	var gone []*group
	for ns, g := range e.groups {
		if g.isHost() {
			continue
		}
		if _, ok := nss[ns]; !ok || !e.sameInit(g) {
			// Gone; or the namespace number came round again for a new
			// container (the kernel reuses them at once): a restarted
			// container must be walked afresh.
			gone = append(gone, g)
		}
	}
	e.mu.RUnlock()
	for _, g := range gone {
		e.dropGroup(g)
	}
	for ns := range e.unmonitored {
		if _, ok := nss[ns]; !ok {
			delete(e.unmonitored, ns)
		}
	}
	if p == nil {
		return
	}
	for ns, pids := range nss {
		e.mu.RLock()
		_, known := e.groups[ns]
		e.mu.RUnlock()
		// A namespace passed over is looked at again after a while: its
		// processes may not have been in their cgroup yet.
		if at, seen := e.unmonitored[ns]; known || seen && time.Since(at) < unmonitoredFor || ns == e.hostNS || ns == e.selfNS {
			continue
		}
		notYet := false
		g := e.newContainerGroup(ns, pids, &notYet)
		if g == nil {
			if !notYet {
				e.unmonitored[ns] = time.Now()
			}
			continue
		}
		g.rules = p.RulesFor(g.target())
		e.checkAllowPaths(g, g.rules)
		if len(g.rules) == 0 {
			unix.Close(g.rootFD)
			e.unmonitored[ns] = time.Now()
			continue
		}
		e.mu.Lock()
		e.groups[ns] = g
		e.containers.Store(true)
		e.mu.Unlock()
		w := e.newWalker(e.tables, g)
		w.walkRules(g.rules)
		e.log.Info("watching container", "container", g.name, "id", g.containerID, "runtime", string(g.runtime),
			"root_pid", g.rootPID, "rules", len(g.rules), "unmarked", w.errs)
	}
}

// unmonitoredFor is how long a namespace passed over stays passed over.
const unmonitoredFor = 10 * time.Second

// newContainerGroup makes the group of a mount namespace whose processes
// carry a container id, or returns nil.
func (e *Engine) newContainerGroup(ns uint64, pids []int32, notYet *bool) *group {
	// The container's init first: its root is the container's.
	ordered := make([]int32, 0, len(pids))
	for _, pid := range pids {
		if e.cfs.IsNamespaceInit(pid) {
			ordered = append(ordered, pid)
		}
	}
	for _, pid := range pids {
		if !e.cfs.IsNamespaceInit(pid) {
			ordered = append(ordered, pid)
		}
	}
	for _, pid := range ordered {
		rt, id, err := e.cfs.ID(pid)
		if err != nil || id == "" {
			continue
		}
		fd, prefix, err := openRoot(e.opts.ProcRoot, pid)
		if err != nil {
			continue
		}
		if fsys.SameFile(fd, e.host.rootFD) {
			// Caught between entering its namespace and changing its
			// root (a runtime's setup, unshare before chroot): its root
			// is still the host's. Walking it would put the container's
			// rules on host files. Look again at the next scan.
			unix.Close(fd)
			*notYet = true
			continue
		}
		g := &group{containerID: id, runtime: rt, ns: ns, rootPID: pid, rootFD: fd, prefix: prefix}
		var sb [1024]byte
		if v, err := e.proc.ReadStat(pid, sb[:]); err == nil {
			g.rootStart = v.StartTime
		}
		meta := container.LookupMeta(e.hostRootPath(), id)
		g.name, g.image = meta.Name, meta.Image
		if g.name == "" {
			g.name = e.cfs.Hostname(pid)
		}
		if g.name == "" {
			g.name = policy.ShortID(id)
		}
		return g
	}
	return nil
}

// sameInit reports whether the process the group was made from still
// runs, in the group's namespace: a pid and start time that match.
func (e *Engine) sameInit(g *group) bool {
	var sb [1024]byte
	v, err := e.proc.ReadStat(g.rootPID, sb[:])
	if err != nil || v.StartTime != g.rootStart {
		return false
	}
	ns, err := e.cfs.MountNS(g.rootPID)
	return err == nil && ns == g.ns
}

// hostRootPath is where the host's files are, as a path of the daemon's:
// through the host group's root descriptor, which is /proc/1/root, or
// the daemon's own root where PID 1's cannot be opened (newHostGroup).
// /proc/1/root by name would be unreadable then, and no runtime's
// state file found.
func (e *Engine) hostRootPath() string {
	if e.host == nil {
		return e.opts.ProcRoot + "/1/root"
	}
	if e.host.prefix != "" {
		return e.host.prefix
	}
	return "/proc/self/fd/" + strconv.Itoa(e.host.rootFD)
}

// dropGroup forgets a container that is gone: its marks, watches and
// table entries.
func (e *Engine) dropGroup(g *group) {
	e.mu.Lock()
	delete(e.groups, g.ns)
	e.containers.Store(len(e.groups) > 1)
	e.allowGen.Add(1)
	// An inode two groups reach (a volume two containers mount, a host
	// directory bind-mounted into one) keeps its entry and marks for the
	// groups that remain: only g's rules go. Entries left without rules
	// go with their marks.
	var dirs []*dirEntry
	var files []*fileEntry
	for _, d := range e.tables.dirs {
		n := 0
		for _, rr := range d.rels {
			if rr.rule.g != g {
				d.rels[n] = rr
				n++
			}
		}
		d.rels = d.rels[:n]
		switch {
		case n == 0:
			dirs = append(dirs, d)
		case d.g == g:
			d.g = d.rels[0].rule.g
		}
	}
	for _, f := range e.tables.files {
		n := 0
		for _, r := range f.rules {
			if r.g != g {
				f.rules[n] = r
				n++
			}
		}
		f.rules = f.rules[:n]
		switch {
		case n == 0:
			files = append(files, f)
		case f.g == g:
			f.g = f.rules[0].g
		}
	}
	for _, f := range files {
		delete(e.tables.files, f.id)
		if e.tables.filesByHandle[f.handle] == f {
			delete(e.tables.filesByHandle, f.handle)
		}
	}
	// The directory fds kept for open_by_handle_at of the group's file
	// systems would pin them (a pod's tmpfs volume) after it is gone.
	for fsid, m := range e.mountFDs {
		if m.g == g {
			unix.Close(m.fd)
			delete(e.mountFDs, fsid)
		}
	}
	e.mu.Unlock()
	for _, d := range dirs {
		e.dropDir(d, false)
	}
	for _, f := range files {
		e.unmark(f.handle, f.perm, f.notif)
	}
	unix.Close(g.rootFD)
	e.log.Info("container gone", "container", g.name, "id", g.containerID, "dirs", len(dirs), "files", len(files))
}

// newHostGroup makes the host's group: the root and mount namespace of
// PID 1, which is the host when the daemon runs there or in a container
// with the host's PID namespace.
func newHostGroup(procRoot string) (*group, error) {
	fd, prefix, err := openRoot(procRoot, 1)
	if err != nil {
		// Without /proc/1/root (a PID namespace of our own without
		// access) the daemon's own root is the host.
		fd, err = unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("opening /: %w", err)
		}
		prefix = ""
	}
	ns, _ := container.FS{Root: procRoot}.MountNS(1)
	return &group{name: "host", rootFD: fd, prefix: prefix, ns: ns, rootPID: 1}, nil
}
