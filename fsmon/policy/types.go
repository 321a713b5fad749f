// Package policy is the configuration of fsmon_exporter: the YAML file,
// its validation, the embedded default, and the compiled form the engine
// matches paths against. It is pure Go and imports no kernel interface, so
// it is tested on any machine.
package policy

import (
	"github.com/fsmon/fsmon_exporter/fsmon"
)

// Behavior is what a filter does with matching files.
type Behavior uint8

const (
	// BehaviorMonitor reports changes of matching files.
	BehaviorMonitor Behavior = iota + 1
	// BehaviorBlock also restricts who may open matching files.
	BehaviorBlock
)

func (b Behavior) String() string {
	switch b {
	case BehaviorMonitor:
		return "monitor"
	case BehaviorBlock:
		return "block"
	}
	return "unknown"
}

// Config is a parsed, validated configuration file.
type Config struct {
	// File is where the configuration came from ("" for the embedded
	// default); errors name it.
	File string
	// Mode is the default mode of every profile.
	Mode fsmon.Mode
	// ImportantFiles adds the built-in important files to every profile.
	ImportantFiles bool
	Profiles       []Profile
	// Source is the file's content, which WithLearned turns into the
	// configuration that allows what was learned.
	Source []byte
}

// Selector picks containers; each non-empty field is a glob (path.Match)
// that must match, and so must every label. The zero Selector selects
// no container.
type Selector struct {
	Name  string
	ID    string
	Image string
	// Namespace and Pod match a pod's namespace and name; Labels its
	// labels. Each selects only containers of pods.
	Namespace string
	Pod       string
	Labels    []LabelMatch
}

// LabelMatch is one pod label a selector needs: the key exactly, the
// value by glob (a value without *, ? or [ matches only itself).
type LabelMatch struct {
	Key, Value string
}

// IsZero reports whether the selector selects nothing.
func (s Selector) IsZero() bool {
	return s.Name == "" && s.ID == "" && s.Image == "" && s.Namespace == "" && s.Pod == "" && len(s.Labels) == 0
}

// Profile is a named set of filters that applies to the host, to
// containers, or to both.
type Profile struct {
	Name string
	// Host: the profile applies to processes in the host's mount
	// namespace.
	Host bool
	// Containers selects the containers the profile applies to. A profile
	// with neither Host nor Containers applies to the host and to every
	// container.
	Containers Selector
	// Mode is the effective mode: the profile's own, or the file's.
	Mode    fsmon.Mode
	Filters []Filter
	Line    int // line of the profile in the file, for messages
}

// Filter selects files and says what to do with them.
type Filter struct {
	// Name defaults to Path.
	Name string
	// Path is a file or a directory, literal or a regular expression
	// anchored at both ends (for example /home/.*/\.ssh).
	Path string
	// Regex, when set, matches the names of files inside the directory
	// Path (anchored at both ends).
	Regex string
	// Recursive extends the filter to every subdirectory of Path,
	// including ones created later.
	Recursive bool
	Behavior  Behavior
	// Allow lists who may open matching files when Behavior is block: an
	// entry that starts with / is an executable path, any other a process
	// name.
	Allow []string
	// ReportAccess reports allowed opens too.
	ReportAccess bool
	Line         int // line of the filter in the file, for messages
}
