package policy

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// Rule is a compiled filter. Everything a permission decision needs is
// prepared here, once per configuration: path components are split and
// compiled, allow lists are sets.
type Rule struct {
	ID           int // index in Policy.Rules
	Profile      *CompiledProfile
	Name         string
	Mode         fsmon.Mode
	Behavior     Behavior
	ReportAccess bool
	Recursive    bool
	Line         int

	comps     []component    // the path, split at every "/"
	name      *regexp.Regexp // Regex on file names; nil: every name
	fileLike  bool           // no Regex: the path may name a file itself
	allowExe  map[string]struct{}
	exePaths  []string
	allowName map[string]struct{}
	nAllow    int
}

// CompiledProfile is a profile with its rules.
type CompiledProfile struct {
	Name       string
	Mode       fsmon.Mode
	Host       bool
	Containers Selector
	Rules      []*Rule
}

// AppliesToHost reports whether the profile covers the host.
func (p *CompiledProfile) AppliesToHost() bool { return p.Host || p.Containers.IsZero() }

// Policy is a compiled configuration.
type Policy struct {
	Config   *Config
	Profiles []*CompiledProfile
	Rules    []*Rule
}

type component struct {
	lit string
	re  *regexp.Regexp // nil when the component is literal
}

func (c component) match(s string) bool {
	if c.re == nil {
		return c.lit == s
	}
	return c.re.MatchString(s)
}

// anchored is how every pattern of a configuration is compiled: matching
// the whole name, and with "." matching any character, a newline
// included: a file name may hold one, and `.*\.pem` must not miss
// "a\nb.pem".
func anchored(pattern string) string { return `(?s)^(?:` + pattern + `)$` }

// regexMeta are the characters that make a filter path a regular
// expression; a path without them is literal, dots included.
const regexMeta = `\*+?()[]{}|^$`

// Compile turns a validated configuration into rules.
func Compile(cfg *Config) (*Policy, error) {
	p := &Policy{Config: cfg}
	var errs ErrorList
	for i := range cfg.Profiles {
		pr := &cfg.Profiles[i]
		cp := &CompiledProfile{Name: pr.Name, Mode: pr.Mode, Host: pr.Host, Containers: pr.Containers}
		if cp.Mode == 0 {
			cp.Mode = cfg.Mode
		}
		if cp.Mode == 0 {
			cp.Mode = fsmon.ModeMonitor
		}
		for j := range pr.Filters {
			r, err := compileRule(cp, &pr.Filters[j])
			if err != nil {
				errs = append(errs, Error{File: cfg.File, Line: pr.Filters[j].Line, Msg: err.Error()})
				continue
			}
			r.ID = len(p.Rules)
			p.Rules = append(p.Rules, r)
			cp.Rules = append(cp.Rules, r)
		}
		p.Profiles = append(p.Profiles, cp)
	}
	if len(errs) > 0 {
		return nil, &errs
	}
	return p, nil
}

func compileRule(cp *CompiledProfile, f *Filter) (*Rule, error) {
	r := &Rule{
		Profile:      cp,
		Name:         f.Name,
		Mode:         cp.Mode,
		Behavior:     f.Behavior,
		ReportAccess: f.ReportAccess,
		Recursive:    f.Recursive,
		Line:         f.Line,
		fileLike:     f.Regex == "",
		allowExe:     map[string]struct{}{},
		allowName:    map[string]struct{}{},
	}
	if r.Name == "" {
		r.Name = f.Path
	}
	if r.Behavior == 0 {
		r.Behavior = BehaviorMonitor
	}
	p := f.Path
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("path %q is not absolute", p)
	}
	isRegex := strings.ContainsAny(p, regexMeta)
	if !isRegex {
		p = path.Clean(p)
	}
	if p != "/" {
		for _, c := range strings.Split(p[1:], "/") {
			if c == "" {
				continue
			}
			comp := component{lit: c}
			if isRegex {
				re, err := regexp.Compile(anchored(c))
				if err != nil {
					return nil, fmt.Errorf("path component %q: %w", c, err)
				}
				if lit, complete := re.LiteralPrefix(); complete {
					comp.lit = lit
				} else {
					comp.re = re
				}
			}
			r.comps = append(r.comps, comp)
		}
	}
	if f.Regex != "" {
		re, err := regexp.Compile(anchored(f.Regex))
		if err != nil {
			return nil, fmt.Errorf("regex %q: %w", f.Regex, err)
		}
		if f.Regex != ".*" {
			r.name = re
		}
	}
	for _, a := range f.Allow {
		if strings.HasPrefix(a, "/") {
			if _, dup := r.allowExe[path.Clean(a)]; !dup {
				r.exePaths = append(r.exePaths, path.Clean(a))
			}
			r.allowExe[path.Clean(a)] = struct{}{}
		} else {
			r.allowName[a] = struct{}{}
		}
		r.nAllow++
	}
	return r, nil
}

// AllowExePaths lists the executable paths of the allow list.
func (r *Rule) AllowExePaths() []string { return r.exePaths }

// HasNames reports whether the allow list has process names, which need
// the process's name to be read.
func (r *Rule) HasNames() bool { return len(r.allowName) > 0 }

// AllowsName reports whether a name entry of the allow list matches comm
// or exeBase, the base name of the executable. The engine matches
// executable entries by identity (AllowExePaths), never by path text.
func (r *Rule) AllowsName(exeBase, comm string) bool {
	if _, ok := r.allowName[comm]; ok && comm != "" {
		return true
	}
	if _, ok := r.allowName[exeBase]; ok && exeBase != "" {
		return true
	}
	return false
}

// AllowEntries is the number of entries of the rule's allow list.
func (r *Rule) AllowEntries() int { return r.nAllow }

// Blocks reports whether the rule restricts opens.
func (r *Rule) Blocks() bool { return r.Behavior == BehaviorBlock }

// WantsOpens reports whether opens of matching files go through the
// permission path.
func (r *Rule) WantsOpens() bool { return r.Behavior == BehaviorBlock || r.ReportAccess }

// Root is the longest literal prefix of the rule's path: where a walk for
// it starts.
func (r *Rule) Root() string {
	var b strings.Builder
	for _, c := range r.comps {
		if c.re != nil {
			break
		}
		b.WriteByte('/')
		b.WriteString(c.lit)
	}
	if b.Len() == 0 {
		return "/"
	}
	return b.String()
}

// Depth is the number of components of the rule's path.
func (r *Rule) Depth() int { return len(r.comps) }
