package policy

import "path"

// Target is the host or one container, as profile selection sees it.
type Target struct {
	// Host: the host's processes (its mount namespace). The other
	// fields are then empty.
	Host bool
	// Name, ID (in full) and Image of a container.
	Name, ID, Image string
	// Namespace, Pod and Labels of a pod's container; empty for other
	// containers.
	Namespace, Pod string
	Labels         map[string]string
}

// Selects reports whether the profile covers the target. A profile with
// neither host nor containers covers the host and every container; one
// with `host: true` and no selector only the host; a selector covers the
// containers whose name, id (in full or its first 12 digits), image,
// pod namespace, pod name and pod labels match every glob it gives. A
// glob never matches a value the container does not have: `image` no
// container without an image, `namespace`, `pod` and `labels` no
// container outside a pod.
func (p *CompiledProfile) Selects(t Target) bool {
	if t.Host {
		return p.AppliesToHost()
	}
	if p.Containers.IsZero() {
		return !p.Host
	}
	s := p.Containers
	if !(glob(s.Name, t.Name) && (glob(s.ID, t.ID) || glob(s.ID, ShortID(t.ID))) && glob(s.Image, t.Image) &&
		glob(s.Namespace, t.Namespace) && glob(s.Pod, t.Pod)) {
		return false
	}
	for _, l := range s.Labels {
		v, ok := t.Labels[l.Key]
		if !ok {
			return false
		}
		// A label may have an empty value, which an empty or a `*`
		// value matches.
		if m, err := path.Match(l.Value, v); err != nil || !m {
			return false
		}
	}
	return true
}

// RulesFor lists the rules of the profiles that cover the target, in
// configuration order.
func (p *Policy) RulesFor(t Target) []*Rule {
	var rs []*Rule
	for _, pr := range p.Profiles {
		if pr.Selects(t) {
			rs = append(rs, pr.Rules...)
		}
	}
	return rs
}

// glob matches v against a path.Match pattern; an empty pattern matches
// anything, a malformed one (rejected when the file is parsed) nothing,
// and no pattern an empty value: `*` is not a way to select what has no
// name, image or pod.
func glob(pattern, v string) bool {
	if pattern == "" {
		return true
	}
	if v == "" {
		return false
	}
	ok, err := path.Match(pattern, v)
	return err == nil && ok
}

// ShortID is the first 12 digits of a container id, as `docker ps`
// shows it.
func ShortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
