// Package container finds containers: processes whose mount namespace
// differs from the host's, grouped by namespace, known by the id in
// their cgroup path, and named by what their runtime says of that id
// (its state files, state.go; the CRI API, package cri), never by what
// the container itself controls (its HOSTNAME, its files). Reading is
// apart from parsing; the proc root is a parameter.
package container

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// ErrParse says a file did not have the expected shape.
var ErrParse = errors.New("container: unexpected file contents")

// Runtime names the container runtime a cgroup path belongs to.
type Runtime string

const (
	RuntimeUnknown    Runtime = ""
	RuntimeDocker     Runtime = "docker"
	RuntimeContainerd Runtime = "containerd"
	RuntimeCRIO       Runtime = "cri-o"
	RuntimePodman     Runtime = "podman"
	RuntimeKubernetes Runtime = "kubernetes"
)

// idPattern finds a container id in one cgroup path: 64 hex digits as a
// path element of its own (v1 /docker/<id>, kubepods .../pod<uid>/<id>)
// or inside a systemd scope name (docker-<id>.scope,
// cri-containerd-<id>.scope, crio-<id>.scope, libpod-<id>.scope).
var idPattern = regexp.MustCompile(`(?:^|/|-)([0-9a-f]{64})(?:\.scope)?(?:/|$)`)

// ParseCgroup finds the container id in the contents of /proc/PID/cgroup
// (v1 and v2 lines alike). The last match of the longest path wins: a
// pod's container id sits below the pod.
func ParseCgroup(b []byte) (Runtime, string) {
	var rt Runtime
	var id string
	for _, line := range bytes.Split(b, []byte("\n")) {
		// hierarchy-ID:controllers:path
		parts := bytes.SplitN(line, []byte(":"), 3)
		if len(parts) != 3 {
			continue
		}
		p := string(parts[2])
		ms := idPattern.FindAllStringSubmatchIndex(p, -1)
		if len(ms) == 0 {
			continue
		}
		m := ms[len(ms)-1]
		cand := p[m[2]:m[3]]
		if strings.Contains(p[:m[2]], "conmon") {
			continue // CRI-O's monitor process, not the container
		}
		id = cand
		rt = runtimeOf(p[:m[2]])
	}
	return rt, id
}

func runtimeOf(prefix string) Runtime {
	last := prefix
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		last = prefix[i+1:]
	}
	switch {
	case strings.HasPrefix(last, "cri-containerd-"):
		return RuntimeContainerd
	case strings.HasPrefix(last, "crio-"):
		return RuntimeCRIO
	case strings.HasPrefix(last, "libpod-"):
		return RuntimePodman
	case strings.HasPrefix(last, "docker-"), strings.HasSuffix(prefix, "/docker/"):
		return RuntimeDocker
	case strings.Contains(prefix, "kubepods"):
		return RuntimeKubernetes
	}
	return RuntimeUnknown
}

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

// ID reads PID's container id from its cgroup file.
func (fs FS) ID(pid int32) (Runtime, string, error) {
	b, err := os.ReadFile(fs.pidPath(pid, "cgroup"))
	if err != nil {
		return "", "", err
	}
	rt, id := ParseCgroup(b)
	return rt, id, nil
}

// IsNamespaceInit reports whether PID is PID 1 of its innermost PID
// namespace (the last field of NSpid in /proc/PID/status): a container's
// init, whose root is the container's root. Helpers that entered the
// mount namespace from outside (a runtime's setup, unshare itself) are
// not.
func (fs FS) IsNamespaceInit(pid int32) bool {
	b, err := os.ReadFile(fs.pidPath(pid, "status"))
	if err != nil {
		return false
	}
	return ParseNSpidInit(b)
}

// ParseNSpidInit reports whether the NSpid line of a status file ends
// in 1 and has more than one field.
func ParseNSpidInit(b []byte) bool {
	i := bytes.Index(b, []byte("\nNSpid:"))
	if i < 0 {
		return false
	}
	line := b[i+7:]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	f := bytes.Fields(line)
	return len(f) > 1 && string(f[len(f)-1]) == "1"
}
