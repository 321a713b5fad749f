package container

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
)

// Init is what a runtime's own state says of a container's first
// process: the container it starts, and that process's pid and start
// time (field 22 of /proc/PID/stat, so that a reused pid is not taken
// for it). The runtime writes this on the host before the container's
// program runs; nothing in the container can change it. It is how a
// mount namespace is known for a container's, never its cgroup (which
// a container with CAP_SYS_ADMIN can leave) nor its HOSTNAME.
type Init struct {
	ID      string
	Runtime Runtime
	PID     int32
	Start   uint64
}

// initRoot is a directory where an OCI runtime keeps one directory per
// container, named by its id, holding state.json; each entry matches
// directories below the host's root (a * for the runtime's namespace).
type initRoot struct {
	glob    string
	runtime Runtime
}

// initRoots are runc's state directories as each runtime runs it:
// Docker (dockerd's runc root, one directory per containerd
// namespace), containerd (its runc shim, per namespace; k8s.io is the
// CRI plugin's), and runc's default root, which podman and CRI-O use.
var initRoots = []initRoot{
	{"run/docker/runtime-runc/*", RuntimeDocker},
	{"run/containerd/runc/k8s.io", RuntimeKubernetes},
	{"run/containerd/runc/*", RuntimeContainerd},
	{"run/runc", RuntimeRunc},
}

// maxInitState bounds what is read of one state.json (it holds the
// container's whole configuration).
const maxInitState = 4 << 20

// Inits reads the runtimes' state of the containers' first processes
// below Root, the host's root as a path of the daemon's. A container's
// record is read once, when it first appears, and kept while its
// directory is there: the pid and start time of an init never change.
type Inits struct {
	Root string

	mu    sync.Mutex
	known map[string]Init // by state directory
}

// ByPID lists every container the runtimes' state holds, by its init's
// pid.
func (s *Inits) ByPID() map[int32]Init {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known == nil {
		s.known = map[string]Init{}
	}
	seen := make(map[string]struct{}, len(s.known))
	out := make(map[int32]Init, len(s.known))
	claimed := map[string]struct{}{} // k8s.io is also matched by *
	for _, r := range initRoots {
		dirs, _ := filepath.Glob(filepath.Join(s.Root, r.glob))
		for _, d := range dirs {
			if _, dup := claimed[d]; dup {
				continue
			}
			claimed[d] = struct{}{}
			ents, err := os.ReadDir(d)
			if err != nil {
				continue
			}
			for _, ent := range ents {
				if !ent.IsDir() || !validID(ent.Name()) {
					continue
				}
				p := filepath.Join(d, ent.Name())
				seen[p] = struct{}{}
				in, ok := s.known[p]
				if !ok {
					if in, ok = readInit(filepath.Join(p, "state.json"), ent.Name(), r.runtime); !ok {
						continue // not written yet: read at the next look
					}
					s.known[p] = in
				}
				out[in.PID] = in
			}
		}
	}
	for p := range s.known {
		if _, ok := seen[p]; !ok {
			delete(s.known, p)
		}
	}
	return out
}

func readInit(p, id string, rt Runtime) (Init, bool) {
	b, err := readCapped(p, maxInitState)
	if err != nil {
		return Init{}, false
	}
	return ParseInitState(b, id, rt)
}

// ParseInitState reads runc's state.json of container id.
func ParseInitState(b []byte, id string, rt Runtime) (Init, bool) {
	var s struct {
		ID    string `json:"id"`
		PID   int32  `json:"init_process_pid"`
		Start uint64 `json:"init_process_start"`
	}
	if err := json.Unmarshal(b, &s); err != nil || s.ID != id || s.PID <= 0 || s.Start == 0 {
		return Init{}, false
	}
	return Init{ID: id, Runtime: rt, PID: s.PID, Start: s.Start}, true
}
