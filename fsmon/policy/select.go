package policy

import "path"

// Target is the host or one container, as profile selection sees it.
type Target struct {
	// Host: the host's processes (its mount namespace). The other
	// fields are then empty.
	Host bool
	// Name, ID (in full) and Image of a container.
	Name, ID, Image string
}

// Selects reports whether the profile covers the target. A profile with
// neither host nor containers covers the host and every container; one
// with `host: true` and no selector only the host; a selector covers the
// containers whose name, id (in full or its first 12 digits) and image
// match every glob it gives.
func (p *CompiledProfile) Selects(t Target) bool {
	if t.Host {
		return p.AppliesToHost()
	}
	if p.Containers.IsZero() {
		return !p.Host
	}
	s := p.Containers
	return glob(s.Name, t.Name) && (glob(s.ID, t.ID) || glob(s.ID, ShortID(t.ID))) && glob(s.Image, t.Image)
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
// anything, a malformed one (rejected when the file is parsed) nothing.
func glob(pattern, v string) bool {
	if pattern == "" {
		return true
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
