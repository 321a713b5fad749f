// Package groups knows the host and the containers: each a mount
// namespace with a root of its own, in which the paths of its profiles
// are resolved, marked and reported. It finds a container's id and root
// from /proc, and its name, image and pod from what its runtime says
// (container.Source).
package groups

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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
	// host's is not one yet.
	Host *Group
	// Meta tells who a container is: the runtimes' state files (read
	// below HostFiles) and APIs.
	Meta container.Source
	// Inits are the runtimes' records of the containers' first
	// processes (below HostFiles): what makes a namespace a container's.
	Inits *container.Inits
}

// Group is the host or one container: a mount namespace with its own
// root, in which every path of its profiles is resolved and marked.
type Group struct {
	Name        string // "host", or the container's name, or its short id
	ContainerID string // full id; "" for the host
	Image       string
	// Pod is the Kubernetes identity of a pod's container (nil
	// otherwise), with the pod's labels.
	Pod *container.Pod
	// SpecName is the container's name in its pod's spec: "" for a
	// pod's sandbox (its pause container), which has none.
	SpecName string
	Runtime  container.Runtime
	NS       uint64 // mount namespace inode
	// PIDNS is the PID namespace inode of the container's init (0 for
	// the host): a process of a mount namespace made later inside the
	// container is still the container's (see the engine's groupOf).
	PIDNS     uint64
	RootPID   int32
	RootStart uint64 // start time of rootPID: with it, the container's identity
	// RootFD is an O_PATH fd of the group's root (for a container, the
	// root of its mount namespace, container.OpenNSRoot):
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
	c := fsmon.Container{ID: g.ContainerID, Name: g.Name, Image: g.Image}
	if g.Pod != nil {
		c.Pod = fsmon.Pod{Namespace: g.Pod.Namespace, Name: g.Pod.Name, UID: g.Pod.UID, ContainerName: g.SpecName}
	}
	return c
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

// Target is the group as profile selection sees it.
func (g *Group) Target() policy.Target {
	if g.IsHost() {
		return policy.Target{Host: true}
	}
	t := policy.Target{Name: g.Name, ID: g.ContainerID, Image: g.Image}
	if g.Pod != nil {
		t.Namespace, t.Pod, t.Labels = g.Pod.Namespace, g.Pod.Name, g.Pod.Labels
	}
	return t
}

// Container makes the group of a mount namespace one of whose processes
// is the first process of a container, as the runtimes' own state says
// (inits, container.Inits: its pid and start time), or returns nil (a
// namespace no runtime has recorded, yet or at all, or a container
// caught in its setup: looked at again at the next scan). What is in the
// container decides nothing: not its cgroup (which it can leave with
// CAP_SYS_ADMIN), not its HOSTNAME, not its init's root (which a chroot
// can make a decoy). The identity is fixed here, when the group is made.
func (f *Finder) Container(ns uint64, pids []int32, inits map[int32]container.Init) *Group {
	for _, pid := range pids {
		in, ok := inits[pid]
		if !ok {
			continue
		}
		var sb [1024]byte
		if v, err := f.Proc.ReadStat(pid, sb[:]); err != nil || v.StartTime != in.Start {
			continue // another process that got the pid
		}
		// The root of the namespace, not the init's: a chroot of the
		// init cannot hide the container's files.
		fd, err := container.OpenNSRoot(f.ProcRoot, pid)
		if err != nil {
			continue
		}
		if cur, err := f.CFS.MountNS(pid); err != nil || cur != ns {
			unix.Close(fd) // it left the namespace while looked at
			continue
		}
		if fsys.SameFile(fd, f.Host.RootFD) {
			// Caught between making its namespace and changing its
			// root (a runtime's setup): the namespace's root is still
			// the host's. Walking it would put the container's rules
			// on host files. Look again at the next scan.
			unix.Close(fd)
			return nil
		}
		return f.made(in, ns, fd)
	}
	return nil
}

// made finishes the group of the container in whose namespace ns root
// fd was opened: its PID namespace, and who its runtime says it is.
func (f *Finder) made(in container.Init, ns uint64, fd int) *Group {
	prefix := fsys.Path(fd)
	if prefix == "/" {
		prefix = ""
	}
	g := &Group{ContainerID: in.ID, Runtime: in.Runtime, NS: ns, RootPID: in.PID, RootStart: in.Start, RootFD: fd, Prefix: prefix}
	if l, err := os.Readlink(f.ProcRoot + "/" + strconv.Itoa(int(in.PID)) + "/ns/pid"); err == nil {
		g.PIDNS, _ = container.ParseNSLink([]byte(l))
	}
	if f.Meta != nil {
		// Never the container's HOSTNAME or files: a container
		// controls those, and would choose its profile.
		if m, ok := f.Meta.Lookup(context.Background(), in.Runtime, in.ID); ok {
			g.Name, g.Image, g.Pod = m.Name, m.Image, m.Pod
			if m.Pod != nil {
				g.SpecName = m.Name
			}
		}
	}
	if g.Name == "" {
		g.Name = policy.ShortID(in.ID)
	}
	return g
}

// Starting makes the group of a container that its runtime is starting
// and tells of through its OCI hook (id, the pid of its first process,
// its bundle): before pivot_root, its root is the bundle's root file
// system as its own mount namespace sees it, mounts and all. The hook's
// peer has been checked to be root on the host (ocihook); the pid must
// still be the process it named, in a mount namespace that is not the
// host's.
func (f *Finder) Starting(id string, pid int32, bundle string) (*Group, error) {
	var sb [1024]byte
	v, err := f.Proc.ReadStat(pid, sb[:])
	if err != nil {
		return nil, fmt.Errorf("the container's process %d: %w", pid, err)
	}
	ns, err := f.CFS.MountNS(pid)
	if err != nil {
		return nil, err
	}
	if self, _ := f.CFS.MountNS(int32(os.Getpid())); ns == f.Host.NS || ns == self {
		return nil, fmt.Errorf("process %d is in the host's mount namespace", pid)
	}
	b, err := os.ReadFile(filepath.Join(f.Inits.Root, bundle, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("the container's bundle: %w", err)
	}
	var spec struct {
		Root struct {
			Path string `json:"path"`
		} `json:"root"`
	}
	if err := json.Unmarshal(b, &spec); err != nil || spec.Root.Path == "" {
		return nil, fmt.Errorf("the bundle's config.json names no root (%v)", err)
	}
	root := spec.Root.Path
	if !filepath.IsAbs(root) {
		root = filepath.Join(bundle, root)
	}
	fd, err := container.OpenInNS(f.ProcRoot, pid, root)
	if err != nil {
		return nil, err
	}
	if fsys.SameFile(fd, f.Host.RootFD) {
		unix.Close(fd)
		return nil, fmt.Errorf("the container's root %s is the host's", root)
	}
	return f.made(container.Init{ID: id, PID: pid, Start: v.StartTime}, ns, fd), nil
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

// HostFiles is where the host's files are, as a path of the daemon's:
// "/" when the daemon runs in the host's mount namespace (PID 1's), and
// PID 1's root only when the daemon runs in a container of its own
// (with the host's PID namespace). Where PID 1's namespace cannot be
// read (a PID 1 that others may not inspect, as on some sandboxes), the
// daemon is taken to be on the host: its own root is then the only one
// it can see.
func HostFiles(procRoot string) string {
	cfs := container.FS{Root: procRoot}
	host, err := cfs.MountNS(1)
	if err != nil {
		return "/"
	}
	self, err := cfs.MountNS(int32(unix.Getpid()))
	if err != nil || self == host {
		return "/"
	}
	return procRoot + "/1/root"
}

// NewHost makes the host's group: the root and mount namespace of the
// host's files (HostFiles), which is PID 1's when the daemon runs there
// or in a container with the host's PID namespace.
func NewHost(procRoot string) (*Group, error) {
	root := HostFiles(procRoot)
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the host's root %s: %w", root, err)
	}
	prefix := fsys.Path(fd)
	if prefix == "/" {
		prefix = ""
	}
	ns, _ := container.FS{Root: procRoot}.MountNS(1)
	return &Group{Name: "host", RootFD: fd, Prefix: prefix, NS: ns, RootPID: 1}, nil
}
