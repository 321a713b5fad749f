// Package groups knows the host and the containers: each a mount
// namespace with a root of its own, in which the paths of its profiles
// are resolved, marked and reported. It finds a container's id, name,
// image and root from /proc and the runtime's state files.
package groups

import (
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/container"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// Finder makes the groups of containers.
type Finder struct {
	ProcRoot string
	Proc     proc.FS
	CFS      container.FS
	// Host is the host's group: a container whose root is still the
	// host's is not one yet, and the runtimes' state files are found
	// through its root.
	Host *Group
}

// Group is the host or one container: a mount namespace with its own
// root, in which every path of its profiles is resolved and marked.
type Group struct {
	Name        string // "host", or the container's name, or its short id
	ContainerID string // full id; "" for the host
	Image       string
	Runtime     container.Runtime
	NS          uint64 // mount namespace inode
	RootPID     int32
	RootStart   uint64 // start time of rootPID: with it, the container's identity
	// RootFD is an O_PATH fd of the group's root (/proc/PID/root):
	// every path of the group is opened below it with RESOLVE_IN_ROOT,
	// so nothing a container holds can lead the daemon out of it.
	RootFD int
	// Prefix is what the daemon's view of the group's paths starts with
	// when its root is a directory of the daemon's (a chroot); paths are
	// reported without it. "" for the host and for pivot_root'ed roots.
	Prefix string
	Rules  []*policy.Rule
}

// IsHost reports whether g is the host.
func (g *Group) IsHost() bool { return g.ContainerID == "" }

// Container names g in events: empty for the host.
func (g *Group) Container() fsmon.Container {
	if g == nil || g.IsHost() {
		return fsmon.Container{}
	}
	return fsmon.Container{ID: g.ContainerID, Name: g.Name}
}

// Inside turns a path as the daemon sees it into the path as the
// group's processes see it.
func (g *Group) Inside(p string) string {
	if g == nil || g.Prefix == "" {
		return p
	}
	if rest, ok := strings.CutPrefix(p, g.Prefix); ok && (rest == "" || rest[0] == '/') {
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

// Target is the group as profile selection sees it.
func (g *Group) Target() policy.Target {
	if g.IsHost() {
		return policy.Target{Host: true}
	}
	return policy.Target{Name: g.Name, ID: g.ContainerID, Image: g.Image}
}

// Container makes the group of a mount namespace whose processes carry
// a container id, or returns nil; notYet says to look again at the next
// scan (a container caught in its setup).
func (f *Finder) Container(ns uint64, pids []int32) (g *Group, notYet bool) {
	// The container's init first: its root is the container's.
	ordered := make([]int32, 0, len(pids))
	for _, pid := range pids {
		if f.CFS.IsNamespaceInit(pid) {
			ordered = append(ordered, pid)
		}
	}
	for _, pid := range pids {
		if !f.CFS.IsNamespaceInit(pid) {
			ordered = append(ordered, pid)
		}
	}
	for _, pid := range ordered {
		rt, id, err := f.CFS.ID(pid)
		if err != nil || id == "" {
			continue
		}
		fd, prefix, err := openRoot(f.ProcRoot, pid)
		if err != nil {
			continue
		}
		if fsys.SameFile(fd, f.Host.RootFD) {
			// Caught between entering its namespace and changing its
			// root (a runtime's setup, unshare before chroot): its root
			// is still the host's. Walking it would put the container's
			// rules on host files. Look again at the next scan.
			unix.Close(fd)
			notYet = true
			continue
		}
		g = &Group{ContainerID: id, Runtime: rt, NS: ns, RootPID: pid, RootFD: fd, Prefix: prefix}
		var sb [1024]byte
		if v, err := f.Proc.ReadStat(pid, sb[:]); err == nil {
			g.RootStart = v.StartTime
		}
		meta := container.LookupMeta(f.hostRootPath(), id)
		g.Name, g.Image = meta.Name, meta.Image
		if g.Name == "" {
			g.Name = f.CFS.Hostname(pid)
		}
		if g.Name == "" {
			g.Name = policy.ShortID(id)
		}
		return g, false
	}
	return nil, notYet
}

// SameInit reports whether the process the group was made from still
// runs, in the group's namespace: a pid and start time that match.
func (f *Finder) SameInit(g *Group) bool {
	var sb [1024]byte
	v, err := f.Proc.ReadStat(g.RootPID, sb[:])
	if err != nil || v.StartTime != g.RootStart {
		return false
	}
	ns, err := f.CFS.MountNS(g.RootPID)
	return err == nil && ns == g.NS
}

// hostRootPath is where the host's files are, as a path of the daemon's:
// through the host group's root descriptor, which is /proc/1/root, or
// the daemon's own root where PID 1's cannot be opened (NewHost).
// /proc/1/root by name would be unreadable then, and no runtime's
// state file found.
func (f *Finder) hostRootPath() string {
	if f.Host == nil {
		return f.ProcRoot + "/1/root"
	}
	if f.Host.Prefix != "" {
		return f.Host.Prefix
	}
	return "/proc/self/fd/" + strconv.Itoa(f.Host.RootFD)
}

// NewHost makes the host's group: the root and mount namespace of
// PID 1, which is the host when the daemon runs there or in a container
// with the host's PID namespace.
func NewHost(procRoot string) (*Group, error) {
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
	return &Group{Name: "host", RootFD: fd, Prefix: prefix, NS: ns, RootPID: 1}, nil
}
