// Package container finds containers: processes whose mount namespace
// differs from the host's, grouped by namespace, known by the runtime's
// record of the container's first process (inits.go: its pid and start
// time), entered for their root (nsroot.go), and named by what their
// runtime says of that id (its state files, state.go; the CRI API,
// package cri), never by what the container itself controls (its
// HOSTNAME, its cgroup, its files). Reading is apart from parsing; the
// proc root is a parameter.
package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// ErrParse says a file did not have the expected shape.
var ErrParse = errors.New("container: unexpected file contents")

// Runtime names the container runtime whose state recorded a container.
type Runtime string

const (
	RuntimeUnknown    Runtime = ""
	RuntimeDocker     Runtime = "docker"
	RuntimeContainerd Runtime = "containerd"
	RuntimeCRIO       Runtime = "cri-o"
	RuntimePodman     Runtime = "podman"
	RuntimeKubernetes Runtime = "kubernetes"
	// RuntimeRunc is a container of runc's default root: podman's and
	// CRI-O's, or runc's own.
	RuntimeRunc Runtime = "runc"
)

// FS reads /proc below Root.
type FS struct{ Root string }

func (fs FS) pidPath(pid int32, file string) string {
	return filepath.Join(fs.Root, strconv.Itoa(int(pid)), file)
}

// MountNS returns the inode number of PID's mount namespace.
func (fs FS) MountNS(pid int32) (uint64, error) {
	l, err := os.Readlink(fs.pidPath(pid, "ns/mnt"))
	if err != nil {
		return 0, err
	}
	return parseNS(l)
}

// parseNS parses "mnt:[4026531841]".
func parseNS(l string) (uint64, error) {
	if v, ok := ParseNSLink([]byte(l)); ok {
		return v, nil
	}
	return 0, fmt.Errorf("%w: namespace link %q", ErrParse, l)
}

// ParseNSLink parses a namespace link ("mnt:[4026531841]") without
// allocating, for the permission path.
func ParseNSLink(b []byte) (uint64, bool) {
	var v uint64
	in, digits := false, 0
	for _, c := range b {
		switch {
		case c == '[':
			if in {
				return 0, false
			}
			in = true
		case c == ']':
			return v, in && digits > 0
		case in && c >= '0' && c <= '9':
			v = v*10 + uint64(c-'0')
			digits++
		case in:
			return 0, false
		}
	}
	return 0, false
}

// Namespaces maps every mount namespace seen in /proc to its pids,
// lowest first.
func (fs FS) Namespaces() (map[uint64][]int32, error) {
	d, err := os.Open(fs.Root)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	out := map[uint64][]int32{}
	for _, n := range names {
		pid, err := strconv.ParseInt(n, 10, 32)
		if err != nil {
			continue
		}
		ns, err := fs.MountNS(int32(pid))
		if err != nil {
			continue // gone, or a kernel thread
		}
		out[ns] = append(out[ns], int32(pid))
	}
	for _, pids := range out {
		sort.Slice(pids, func(i, j int) bool { return pids[i] < pids[j] })
	}
	return out, nil
}
