package policy

import "github.com/fsmon/fsmon_exporter/fsmon"

// A permission decision is policy and kernel facts apart: this file
// holds the policy (what a rule makes of an opener, which of several
// rules wins); the engine only gathers the facts Judge asks for. So the
// rules are tested without root, and the loop that holds every open
// reads no more of /proc than the rules need.

// Fact is a yes/no fact about the opener that may not be known yet.
type Fact uint8

const (
	Unknown Fact = iota
	No
	Yes
)

// FactOf turns a boolean into a known Fact.
func FactOf(b bool) Fact {
	if b {
		return Yes
	}
	return No
}

// Need names the facts Judge needs before it can answer.
type Need uint8

const (
	// NeedExe: whether the opener's executable is one the rule's
	// executable entries name (by identity: the engine compares inodes
	// in the rule's root).
	NeedExe Need = 1 << iota
	// NeedNames: the opener's process name (comm) and the base name of
	// its executable, for name entries.
	NeedNames
	// NeedLoader: what the opener's initial environment told its
	// dynamic loader to load besides the program (LD_PRELOAD and the
	// like), asked only once its executable matched an entry.
	NeedLoader
)

// Subject is what is known of the opener for one rule. The engine fills
// it as Judge asks; ExeAllowed is per rule (allow lists differ), the
// names are the process's.
type Subject struct {
	// ExeAllowed: whether the executable is one of the rule's executable
	// entries.
	ExeAllowed Fact
	// NamesKnown says Comm and ExeBase are filled.
	NamesKnown    bool
	Comm, ExeBase string
	// LoaderKnown says Loader is filled: what the loader was told at the
	// opener's exec. The process's, not the rule's.
	LoaderKnown bool
	Loader      fsmon.LoaderEnv
}

// Judge says what the rule makes of an open by the subject: 0 when
// nothing is reported (no block filter, or an allowed opener without
// report_access), else the kind of event. When a fact is missing it
// returns the Need instead; the caller fills it and asks again. Only
// the facts that can change the answer are asked for: the executable
// first, the loader's environment only when it matches, the names only
// when it does not count and the list has names.
func Judge(r *Rule, s *Subject) (fsmon.Kind, Need) {
	if r.Blocks() {
		allowed := false
		if len(r.exePaths) > 0 {
			if s.ExeAllowed == Unknown {
				return 0, NeedExe
			}
			allowed = s.ExeAllowed == Yes
			if allowed {
				// An executable entry trusts a program, not whatever
				// code its loader was told to run inside it first.
				if !s.LoaderKnown {
					return 0, NeedLoader
				}
				allowed = !s.Loader.Refuses()
			}
		}
		if !allowed && len(r.allowName) > 0 {
			if !s.NamesKnown {
				return 0, NeedNames
			}
			// Names are matched as the seed did, against comm or the
			// base name of the executable. Any process can take any
			// name: a name entry never proves who runs (docs say so).
			allowed = r.AllowsName(s.ExeBase, s.Comm)
		}
		if !allowed {
			return outsider(r.Mode), 0
		}
	}
	if r.ReportAccess {
		return fsmon.KindAccess, 0
	}
	return 0, 0
}

// outsider is what an open by a process outside the allow list becomes
// in each mode.
func outsider(m fsmon.Mode) fsmon.Kind {
	switch m {
	case fsmon.ModeProtect:
		return fsmon.KindDenied
	case fsmon.ModeLearn:
		return fsmon.KindLearned
	}
	return fsmon.KindViolation
}

// Severity orders outcomes when several rules cover one file: the most
// severe is the one reported and enforced, so a protect-mode block
// filter is never outweighed by a monitor or learn filter of another
// profile.
func Severity(k fsmon.Kind) int {
	switch k {
	case fsmon.KindDenied:
		return 4
	case fsmon.KindViolation:
		return 3
	case fsmon.KindLearned:
		return 2
	case fsmon.KindAccess:
		return 1
	}
	return 0
}

// Outcome folds the judgements of the rules that cover a file.
type Outcome struct {
	Kind fsmon.Kind
	// Rule is the index (in the caller's list) of the rule that gave
	// Kind; the first of equally severe ones. Meaningless when Kind is 0.
	Rule int
}

// Add takes the judgement of rule i into account.
func (o *Outcome) Add(k fsmon.Kind, i int) {
	if Severity(k) > Severity(o.Kind) {
		o.Kind, o.Rule = k, i
	}
}

// Denies reports whether the open fails: only a protect-mode block
// filter's outsider is denied.
func (o Outcome) Denies() bool { return o.Kind == fsmon.KindDenied }
