package policy

// Relation says how a directory relates to a rule. It is worked out once
// per directory when the directory is walked (regular expressions of path
// components run there), so that an event only matches a file name.
type Relation uint8

const (
	// RelPath: the directory is the rule's path; its files whose names
	// match the rule's regex are covered.
	RelPath Relation = 1 << iota
	// RelParent: the rule's path names an entry of this directory (a
	// file filter): entries whose name matches the last component are
	// covered.
	RelParent
	// RelUnder: the directory is below the rule's path and the rule is
	// recursive: its files whose names match the regex are covered.
	RelUnder
	// RelScaffold: the directory is on the way to the rule's path; new
	// subdirectories may become covered.
	RelScaffold
)

// Has reports whether every bit of o is in r.
func (r Relation) Has(o Relation) bool { return r&o == o }

// Covers reports whether files directly in the directory can be covered.
func (r Relation) Covers() bool { return r&(RelPath|RelParent|RelUnder) != 0 }

// RelationOf works out how the directory with the given components
// (the path split at "/", without the empty first) relates to the rule.
func (r *Rule) RelationOf(dir []string) Relation {
	k, n := len(dir), len(r.comps)
	prefix := k <= n
	for i := 0; prefix && i < k; i++ {
		prefix = r.comps[i].match(dir[i])
	}
	var rel Relation
	switch {
	case prefix && k == n:
		rel |= RelPath
	case prefix && k == n-1:
		if r.fileLike {
			rel |= RelParent
		}
		rel |= RelScaffold
	case prefix && k < n:
		rel |= RelScaffold
	}
	if r.Recursive && k > n {
		under := true
		for i := 0; under && i < n; i++ {
			under = r.comps[i].match(dir[i])
		}
		if under {
			rel |= RelUnder
		}
	}
	return rel
}

// ChildRelation works out the relation of a subdirectory named name of a
// directory whose relation is parent and whose components are dir; it is
// the same as RelationOf(append(dir, name)) but says early when the
// subdirectory is of no interest.
func (r *Rule) ChildRelation(dir []string, parent Relation, name string) Relation {
	if parent&(RelScaffold|RelParent) == 0 && !(r.Recursive && parent&(RelPath|RelUnder) != 0) {
		return 0
	}
	return r.RelationOf(append(dir[:len(dir):len(dir)], name))
}

// MatchName reports whether the file called name, directly in a
// directory of relation rel, is covered by the rule.
func (r *Rule) MatchName(rel Relation, name string) bool {
	if rel&(RelPath|RelUnder) != 0 && (r.name == nil || r.name.MatchString(name)) {
		return true
	}
	if rel&RelParent != 0 && len(r.comps) > 0 && r.comps[len(r.comps)-1].match(name) {
		return true
	}
	return false
}

// LastLiteral returns the rule's last path component when it is literal,
// so that a walk of a RelParent directory can look up one name instead of
// reading the directory.
func (r *Rule) LastLiteral() (string, bool) {
	if len(r.comps) == 0 {
		return "", false
	}
	c := r.comps[len(r.comps)-1]
	return c.lit, c.re == nil
}

// LiteralAt returns the rule's path component at depth k when it exists
// and is literal: a name the configuration spells out, which a walk may
// follow through a symlink.
func (r *Rule) LiteralAt(k int) (string, bool) {
	if k < 0 || k >= len(r.comps) || r.comps[k].re != nil {
		return "", false
	}
	return r.comps[k].lit, true
}
