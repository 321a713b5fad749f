package policy

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"regexp/syntax"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unicode"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// Limits that keep absurd input from costing more than a bad error
// message. Real configurations are a few kilobytes.
const (
	// MaxFileSize is the largest configuration file accepted.
	MaxFileSize = 32 << 20
	// maxNodes bounds the YAML nodes visited, aliases counted each time
	// they are followed, so that a small file of nested aliases cannot
	// expand into millions of filters.
	maxNodes = 1 << 20
	// maxErrors bounds the messages of one file: past it the file is
	// clearly not a configuration and more lines help nobody.
	maxErrors = 100
	// maxCollected bounds the errors kept before sorting, so that the
	// ones shown are the first by line even when found out of order.
	maxCollected = 10 * maxErrors
)

// DefaultFile is the file name errors of the embedded default carry.
const DefaultFile = "<default>"

//go:embed default.yaml
var defaultYAML []byte

// Error is one problem of a configuration file, at a line (1-based).
type Error struct {
	File string
	Line int
	Msg  string
}

func (e Error) Error() string { return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg }

// ErrorList is every problem found in a configuration file, in line
// order. Parse and Load return it as *ErrorList; use errors.As to get
// at the lines.
type ErrorList []Error

func (l *ErrorList) Error() string {
	lines := make([]string, len(*l))
	for i, e := range *l {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads and parses the configuration file at path. Errors in the
// file are an *ErrorList; a path that cannot be read as a configuration
// is the wrapped os error, or ErrNotRegular, with the path in the text.
//
// Only a regular file is opened for reading. A FIFO would block the
// read (and a reload on SIGHUP with it, for good); a device may act when
// opened (a watchdog starts, a tape rewinds) or never end. So the path
// is first opened with O_PATH, which follows symlinks (a Kubernetes
// ConfigMap is one) but calls no driver and never waits for a writer;
// that inode is checked with fstat, and only then opened for reading
// through /proc/self/fd, which reopens the very inode just checked, not
// whatever the path names by then.
func Load(file string) (*Config, error) {
	fd, err := openPath(file)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("reading configuration %s: %w", file, err)
	}
	if err := regularFile(file, st.Mode); err != nil {
		return nil, err
	}
	f, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fd), os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("reading configuration %s: %w", file, err)
	}
	defer f.Close()
	// Read one byte past the limit so that Parse sees the file is too
	// big without us reading all of a huge file.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading configuration %s: %w", file, err)
	}
	return Parse(file, data)
}

// openPath opens file with O_PATH: no read access, no driver open, no
// wait; an error is an *os.PathError as os.Open gives.
func openPath(file string) (int, error) {
	for {
		fd, err := unix.Open(file, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &os.PathError{Op: "open", Path: file, Err: err}
		}
		return fd, nil
	}
}

func fstat(fd int, st *syscall.Stat_t) error {
	for {
		err := syscall.Fstat(fd, st)
		if err != syscall.EINTR {
			return err
		}
	}
}

// ErrNotRegular says a configuration path is not a regular file.
var ErrNotRegular = errors.New("not a regular file")

func regularFile(file string, mode uint32) error {
	kind := "a special file"
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return nil
	case syscall.S_IFDIR:
		kind = "a directory"
	case syscall.S_IFIFO:
		kind = "a named pipe (FIFO)"
	case syscall.S_IFSOCK:
		kind = "a socket"
	case syscall.S_IFCHR:
		kind = "a character device"
	case syscall.S_IFBLK:
		kind = "a block device"
	}
	return fmt.Errorf("%s: %w: it is %s", file, ErrNotRegular, kind)
}

// Parse parses and validates a configuration; file names it in errors
// and in Config.File. Every problem is reported, as an *ErrorList.
func Parse(file string, data []byte) (*Config, error) {
	p := &parser{file: file}
	cfg := p.parse(data)
	if cfg != nil {
		cfg.Source = data
	}
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
		if len(p.errs) > maxErrors {
			p.errs = append(p.errs[:maxErrors], Error{file, p.errs[maxErrors].Line, "too many errors"})
		}
		errs := p.errs
		return nil, &errs
	}
	return cfg, nil
}

// Default is the embedded default configuration: one profile, default,
// that applies to the host and to every container, in monitor mode, with
// the important files. It goes through Parse like any file, so a broken
// default.yaml panics here (and in the tests) rather than at a user.
func Default() *Config {
	cfg, err := Parse(DefaultFile, defaultYAML)
	if err != nil {
		panic("policy: the embedded default configuration is broken: " + err.Error())
	}
	cfg.File = ""
	return cfg
}

// ImportantFiles returns the built-in important files (the filters of
// the embedded default), which important_files: true adds to every
// profile. The slice is the caller's to keep.
func ImportantFiles() []Filter {
	return Default().Profiles[0].Filters
}

// parser collects the errors of one file while it walks the YAML tree.
type parser struct {
	file  string
	errs  ErrorList
	nodes int
}

func (p *parser) errorf(line int, format string, args ...any) {
	if len(p.errs) > maxCollected {
		return
	}
	if line < 1 {
		line = 1
	}
	// One problem, one line: --config.check output is read line by line.
	msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", `\n`)
	p.errs = append(p.errs, Error{p.file, line, msg})
}

// yamlLine pulls the line out of a go-yaml message ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (p *parser) parse(data []byte) (cfg *Config) {
	if len(data) > MaxFileSize {
		p.errorf(1, "file is larger than the %d MiB limit of a configuration", MaxFileSize>>20)
		return nil
	}
	doc, err := decodeOne(data)
	if err != nil {
		msg, line := strings.TrimPrefix(err.Error(), "yaml: "), 1
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			line, _ = strconv.Atoi(m[1])
			msg = m[2]
		}
		p.errorf(line, "YAML: %s", msg)
		return nil
	}
	if doc == nil || len(doc.Content) == 0 {
		p.errorf(1, "empty configuration: it needs at least one profile")
		return nil
	}
	return p.config(doc.Content[0])
}

// decodeOne decodes the single YAML document of data; nil when there is
// none. A second document is an error: it would otherwise be ignored.
func decodeOne(data []byte) (doc *yaml.Node, err error) {
	// go-yaml has panicked on hostile input before; a configuration
	// must never take the daemon down, so a panic becomes an error.
	defer func() {
		if r := recover(); r != nil {
			doc, err = nil, fmt.Errorf("yaml: parser failure: %v", r)
		}
	}()
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	var first yaml.Node
	if err := dec.Decode(&first); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var second yaml.Node
	switch err := dec.Decode(&second); {
	case errors.Is(err, io.EOF):
		return &first, nil
	case err != nil:
		return nil, err
	}
	return nil, fmt.Errorf("yaml: line %d: more than one YAML document; a configuration file holds one", second.Line)
}

// Keys of each mapping, in the order the docs list them.
var (
	configKeys    = []string{"mode", "important_files", "profiles"}
	profileKeys   = []string{"name", "host", "containers", "mode", "filters"}
	selectorKeys  = []string{"name", "id", "image", "namespace", "pod", "labels"}
	filterKeys    = []string{"name", "path", "regex", "recursive", "behavior", "allow", "report_access"}
	behaviorNames = map[string]Behavior{"monitor": BehaviorMonitor, "block": BehaviorBlock}
)

func (p *parser) config(n *yaml.Node) *Config {
	n = p.resolve(n)
	if n == nil {
		return nil
	}
	cfg := &Config{File: p.file, Mode: fsmon.ModeMonitor}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		p.errorf(n.Line, "empty configuration: it needs at least one profile")
		return nil
	}
	f, ok := p.fields(n, "the configuration", configKeys)
	if !ok {
		return nil
	}
	if v := f["mode"]; v != nil {
		if m, ok := p.mode(v); ok {
			cfg.Mode = m
		}
	}
	importantLine := 0
	if v := f["important_files"]; v != nil {
		cfg.ImportantFiles, _ = p.boolean(v, "important_files")
		importantLine = v.Line
	}
	var items []*yaml.Node
	if v := f["profiles"]; v != nil {
		items, _ = p.list(v, "profiles")
	}
	if len(items) == 0 {
		line := n.Line
		if v := f["profiles"]; v != nil {
			line = v.Line
		}
		p.errorf(line, "no profiles: the configuration needs at least one (a profile with only a name and filters applies everywhere)")
	}
	names := map[string]int{}
	for _, item := range items {
		// A profile with errors still claims its name, so that a
		// duplicate is reported in the same run.
		pr, ok := p.profile(item, cfg.Mode)
		if pr.Name != "" {
			if first, dup := names[pr.Name]; dup {
				// item.Line: where an alias repeats a profile, not the
				// anchor it repeats.
				p.errorf(item.Line, "duplicate profile name %q (first at line %d)", pr.Name, first)
				continue
			}
			names[pr.Name] = pr.Line
		}
		if ok {
			cfg.Profiles = append(cfg.Profiles, pr)
		}
	}
	if len(p.errs) > 0 {
		return nil
	}
	if cfg.ImportantFiles {
		p.addImportantFiles(cfg, importantLine)
	}
	return cfg
}

// addImportantFiles appends the built-in important files to every
// profile, skipping any whose name the profile already uses: the
// user's filter of that name wins.
func (p *parser) addImportantFiles(cfg *Config, line int) {
	for i := range cfg.Profiles {
		pr := &cfg.Profiles[i]
		have := make(map[string]bool, len(pr.Filters))
		for _, f := range pr.Filters {
			have[f.Name] = true
		}
		for _, f := range ImportantFiles() {
			if have[f.Name] {
				continue
			}
			f.Line = line
			pr.Filters = append(pr.Filters, f)
		}
	}
}

func (p *parser) profile(n *yaml.Node, mode fsmon.Mode) (Profile, bool) {
	n = p.resolve(n)
	if n == nil {
		return Profile{}, false
	}
	pr := Profile{Line: n.Line, Mode: mode}
	f, ok := p.fields(n, "a profile", profileKeys)
	if !ok {
		return pr, false
	}
	errs := len(p.errs)
	if v := f["name"]; v == nil {
		p.errorf(n.Line, "profile has no name")
	} else if s, ok := p.str(v, "profile name"); ok {
		pr.Name = s
		p.checkName(v.Line, "profile name", s)
	}
	if v := f["host"]; v != nil {
		pr.Host, _ = p.boolean(v, "host")
	}
	if v := f["containers"]; v != nil {
		pr.Containers = p.selector(v)
	}
	if v := f["mode"]; v != nil {
		if m, ok := p.mode(v); ok {
			pr.Mode = m
		}
	}
	var items []*yaml.Node
	if v := f["filters"]; v != nil {
		items, _ = p.list(v, "filters")
	}
	names := map[string]int{}
	for _, item := range items {
		fl, ok := p.filter(item, pr.Mode)
		if fl.Name != "" {
			if first, dup := names[fl.Name]; dup {
				hint := ""
				if fl.Name == fl.Path {
					hint = " (a filter's name defaults to its path: name them apart)"
				}
				p.errorf(item.Line, "duplicate filter name %q in profile %q (first at line %d)%s", fl.Name, pr.Name, first, hint)
				continue
			}
			names[fl.Name] = fl.Line
		}
		if ok {
			pr.Filters = append(pr.Filters, fl)
		}
	}
	return pr, len(p.errs) == errs
}

func (p *parser) selector(n *yaml.Node) Selector {
	var s Selector
	n = p.resolve(n)
	if n == nil {
		return s
	}
	f, ok := p.fields(n, "containers", selectorKeys)
	if !ok {
		return s
	}
	if len(n.Content) == 0 {
		p.errorf(n.Line, "containers: give at least one of name, id, image, namespace, pod or labels (leave containers out to apply the profile everywhere)")
		return s
	}
	for _, k := range selectorKeys {
		v := f[k]
		if v == nil {
			continue
		}
		if k == "labels" {
			s.Labels = p.labels(v)
			continue
		}
		g, ok := p.str(v, "containers."+k)
		if !ok {
			continue
		}
		if g == "" {
			p.errorf(v.Line, "containers.%s is empty: leave it out instead", k)
			continue
		}
		// path.Match reports a bad pattern whatever the name, but only
		// on reaching the bad part; matching against the pattern itself
		// gets that far.
		if _, err := path.Match(g, g); err != nil {
			p.errorf(v.Line, "containers.%s: bad glob %q: %v", k, g, err)
			continue
		}
		switch k {
		case "name":
			s.Name = g
		case "id":
			s.ID = g
		case "image":
			s.Image = g
		case "namespace":
			s.Namespace = g
		case "pod":
			s.Pod = g
		}
	}
	return s
}

// labels parses `labels: {key: value-glob, ...}`: pod labels that must
// all be there, keys exact (as Kubernetes writes them, an optional
// DNS prefix and a slash, then a name), values by glob.
func (p *parser) labels(n *yaml.Node) []LabelMatch {
	n = p.resolve(n)
	if n == nil {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, "containers.labels: want a mapping of label keys to values, got %s", describe(n))
		return nil
	}
	if len(n.Content) == 0 {
		p.errorf(n.Line, "containers.labels is empty: leave it out instead")
		return nil
	}
	var out []LabelMatch
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := p.resolve(n.Content[i]), p.resolve(n.Content[i+1])
		if k == nil || v == nil {
			return nil
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			p.errorf(k.Line, "containers.labels: a key must be a label key, got %s", describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errorf(k.Line, "duplicate label %q in containers.labels (first at line %d)", k.Value, first)
			continue
		}
		seen[k.Value] = k.Line
		if err := checkLabelKey(k.Value); err != "" {
			p.errorf(k.Line, "containers.labels: label key %q: %s", k.Value, err)
			continue
		}
		val, ok := p.str(v, "containers.labels."+k.Value)
		if !ok {
			continue
		}
		if _, err := path.Match(val, val); err != nil {
			p.errorf(v.Line, "containers.labels.%s: bad glob %q: %v", k.Value, val, err)
			continue
		}
		out = append(out, LabelMatch{Key: k.Value, Value: val})
	}
	return out
}

// checkLabelKey says what is wrong with a Kubernetes label key, or "":
// [prefix/]name, the name 1-63 characters of letters, digits, '-', '_'
// and '.' that begins and ends with a letter or digit, the prefix a DNS
// subdomain of at most 253. Globs are not keys: a key is matched as
// written.
func checkLabelKey(k string) string {
	prefix, name, hasPrefix := strings.Cut(k, "/")
	if !hasPrefix {
		name, prefix = prefix, ""
	}
	if hasPrefix && (prefix == "" || len(prefix) > 253 || !labelChars(prefix, false)) {
		return "the prefix before / must be a DNS subdomain (lower-case letters, digits, '-' and '.')"
	}
	if name == "" || len(name) > 63 || !labelChars(name, true) {
		return "the name must be 1-63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit (keys are exact: no globs)"
	}
	return ""
}

func labelChars(s string, name bool) bool {
	alnum := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || name && c >= 'A' && c <= 'Z'
	}
	if !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !alnum(c) && c != '-' && c != '.' && !(name && c == '_') {
			return false
		}
	}
	return true
}

func (p *parser) filter(n *yaml.Node, mode fsmon.Mode) (Filter, bool) {
	n = p.resolve(n)
	if n == nil {
		return Filter{}, false
	}
	fl := Filter{Line: n.Line, Behavior: BehaviorMonitor}
	f, ok := p.fields(n, "a filter", filterKeys)
	if !ok {
		return fl, false
	}
	errs := len(p.errs)
	if v := f["path"]; v == nil {
		p.errorf(n.Line, "filter has no path")
	} else if s, ok := p.str(v, "path"); ok {
		fl.Path = p.checkPath(v.Line, s, f["regex"] != nil)
	}
	if v := f["name"]; v != nil {
		if s, ok := p.str(v, "filter name"); ok {
			fl.Name = s
			p.checkName(v.Line, "filter name", s)
		}
	} else {
		fl.Name = fl.Path
	}
	if v := f["regex"]; v != nil {
		if s, ok := p.str(v, "regex"); ok {
			fl.Regex = s
			p.checkRegex(v.Line, s)
		}
	}
	if v := f["recursive"]; v != nil {
		fl.Recursive, _ = p.boolean(v, "recursive")
	}
	if v := f["behavior"]; v != nil {
		if s, ok := p.str(v, "behavior"); ok {
			if b, known := behaviorNames[s]; known {
				fl.Behavior = b
			} else {
				p.errorf(v.Line, "unknown behavior %q: want monitor or block", s)
			}
		}
	}
	if v := f["report_access"]; v != nil {
		fl.ReportAccess, _ = p.boolean(v, "report_access")
	}
	allowLine := n.Line
	if v := f["allow"]; v != nil {
		allowLine = v.Line
		items, _ := p.list(v, "allow")
		for i, item := range items {
			s, ok := p.str(item, "allow entry")
			if !ok {
				continue
			}
			switch {
			case s == "":
				p.errorf(item.Line, "allow entry %d is empty", i+1)
			case strings.ContainsRune(s, 0):
				p.errorf(item.Line, "allow entry %d contains a NUL byte", i+1)
			default:
				fl.Allow = append(fl.Allow, s)
			}
		}
	}
	if len(p.errs) == errs && fl.Behavior == BehaviorBlock && mode == fsmon.ModeProtect && len(fl.Allow) == 0 {
		p.errorf(allowLine, "filter %q blocks in protect mode with an empty allow list: every process, root included, would be denied; "+
			"list who may open it in allow, or use monitor or learn mode", fl.Name)
	}
	return fl, len(p.errs) == errs
}

// checkName rejects names that would garble logs and label values.
func (p *parser) checkName(line int, what, s string) {
	switch {
	case s == "":
		p.errorf(line, "%s is empty", what)
	case strings.IndexFunc(s, unicode.IsControl) >= 0:
		p.errorf(line, "%s %q contains a control character", what, s)
	}
}

// pathIsPattern reports whether a filter path is a regular expression:
// it holds a metacharacter other than the dot, which is common in file
// names.
func pathIsPattern(s string) bool { return strings.ContainsAny(s, regexMeta) }

// checkPath validates a filter path and returns it cleaned; dir says
// the filter has a regex, so the path must be usable as a directory.
func (p *parser) checkPath(line int, s string, dir bool) string {
	if s == "" {
		p.errorf(line, "path is empty")
		return s
	}
	if strings.ContainsRune(s, 0) {
		p.errorf(line, "path %q contains a NUL byte", s)
		return s
	}
	if !pathIsPattern(s) {
		if !strings.HasPrefix(s, "/") {
			p.errorf(line, "path %q is not absolute: it must start with /", s)
			return s
		}
		return path.Clean(s)
	}
	if _, err := compileAnchored(s); err != nil {
		p.errorf(line, "path %q: %v", s, err)
		return s
	}
	if !strings.HasPrefix(s, "/") {
		hint := ""
		if strings.HasPrefix(s, "^") {
			hint = " (leave out ^ and $: a path is anchored at both ends already)"
		}
		p.errorf(line, "path %q is not absolute: it must start with /%s", s, hint)
		return s
	}
	// The engine matches a pattern one /-separated element at a time
	// (that is how it walks directories), so each element has to stand
	// on its own and be able to match a name.
	for _, elem := range strings.Split(s[1:], "/") {
		if elem == "" {
			continue
		}
		// Compiled as the engine compiles it, so that a valid file
		// always compiles.
		_, err := regexp.Compile(anchored(elem))
		re, perr := syntax.Parse(elem, syntax.Perl)
		if err != nil || perr != nil {
			p.errorf(line, "path %q: element %q is not a regular expression on its own: "+
				"a path pattern is matched one /-separated element at a time, so a group or class cannot hold a /", s, elem)
			return s
		}
		if matchesNoName(re.Simplify()) {
			if dir {
				p.errorf(line, "path %q is not usable as a directory, which regex needs: its element %q matches no directory name", s, elem)
			} else {
				p.errorf(line, "path %q: element %q matches no file or directory name", s, elem)
			}
			return s
		}
	}
	return cleanPattern(s)
}

// matchesNoName reports whether a pattern can only match the empty
// string (or nothing at all): no name is empty.
func matchesNoName(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpNoMatch, syntax.OpEmptyMatch, syntax.OpBeginLine, syntax.OpEndLine,
		syntax.OpBeginText, syntax.OpEndText, syntax.OpWordBoundary, syntax.OpNoWordBoundary:
		return true
	case syntax.OpConcat, syntax.OpAlternate, syntax.OpCapture, syntax.OpStar, syntax.OpPlus, syntax.OpQuest, syntax.OpRepeat:
		for _, sub := range re.Sub {
			if !matchesNoName(sub) {
				return false
			}
		}
		return true
	}
	return false
}

// cleanPattern cleans a path that is a regular expression. A "." or
// ".." element is a wildcard there, not a directory, so such a path only
// loses its trailing slashes.
func cleanPattern(s string) string {
	for _, elem := range strings.Split(s, "/") {
		if elem == "." || elem == ".." {
			if t := strings.TrimRight(s, "/"); t != "" {
				return t
			}
			return "/"
		}
	}
	return path.Clean(s)
}

// compileAnchored compiles a path or name pattern anchored at both ends.
// The pattern is checked alone first: wrapped in ^(?:...)$, an
// unbalanced "a)(b" would compile into something else.
func compileAnchored(s string) (*regexp.Regexp, error) {
	if _, err := syntax.Parse(s, syntax.Perl); err != nil {
		var se *syntax.Error
		if errors.As(err, &se) {
			return nil, fmt.Errorf("invalid regular expression: %s: `%s`", se.Code, se.Expr)
		}
		return nil, fmt.Errorf("invalid regular expression: %w", err)
	}
	re, err := regexp.Compile(anchored(s))
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression: %w", err)
	}
	return re, nil
}

// hasSlash reports whether a pattern holds a literal /.
func hasSlash(re *syntax.Regexp) bool {
	if re.Op == syntax.OpLiteral && strings.ContainsRune(string(re.Rune), '/') {
		return true
	}
	for _, sub := range re.Sub {
		if hasSlash(sub) {
			return true
		}
	}
	return false
}

// checkRegex validates the file-name pattern of a directory filter.
func (p *parser) checkRegex(line int, s string) {
	if strings.ContainsRune(s, 0) {
		p.errorf(line, "regex %q contains a NUL byte", s)
		return
	}
	if _, err := compileAnchored(s); err != nil {
		p.errorf(line, "regex %q: %v", s, err)
		return
	}
	if re, err := syntax.Parse(s, syntax.Perl); err == nil && hasSlash(re) {
		p.errorf(line, "regex %q holds a /, but it is matched against file names, which never do; put directories in path", s)
	}
}

func (p *parser) mode(n *yaml.Node) (fsmon.Mode, bool) {
	s, ok := p.str(n, "mode")
	if !ok {
		return 0, false
	}
	m, ok := fsmon.ParseMode(s)
	if !ok {
		p.errorf(n.Line, "unknown mode %q: want learn, monitor or protect", s)
	}
	return m, ok
}

// resolve follows an alias to its anchored node and counts the node
// against the budget; nil when the budget is spent.
func (p *parser) resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	p.nodes++
	if p.nodes == maxNodes+1 {
		p.errorf(n.Line, "configuration too complex: more than %d YAML nodes, aliases counted each time they are used", maxNodes)
	}
	if p.nodes > maxNodes {
		return nil
	}
	return n
}

// describe names the kind of a node for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.DocumentNode:
		return "a document"
	}
	switch n.ShortTag() {
	case "!!null":
		return "nothing (null)"
	case "!!bool", "!!int", "!!float":
		return n.Value
	}
	return strconv.Quote(n.Value)
}

// checkTag rejects application tags (!env FOO and the like): the file
// would mean something other than it says.
func (p *parser) checkTag(n *yaml.Node) bool {
	if n.Tag != "" && n.Tag != "!" && !strings.HasPrefix(n.ShortTag(), "!!") {
		p.errorf(n.Line, "unsupported YAML tag %s", n.Tag)
		return false
	}
	return true
}

// fields checks that n is a mapping of known, unique scalar keys and
// returns its values by key.
func (p *parser) fields(n *yaml.Node, what string, known []string) (map[string]*yaml.Node, bool) {
	n = p.resolve(n)
	if n == nil {
		return nil, false
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, "%s: want a mapping, got %s", what, describe(n))
		return nil, false
	}
	if !p.checkTag(n) {
		return nil, false
	}
	out := make(map[string]*yaml.Node, len(n.Content)/2)
	lines := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := p.resolve(n.Content[i]), p.resolve(n.Content[i+1])
		if k == nil || v == nil {
			return nil, false
		}
		switch {
		case k.Kind != yaml.ScalarNode:
			p.errorf(k.Line, "%s: a key must be a string, got %s", what, describe(k))
			continue
		case k.ShortTag() == "!!merge":
			p.errorf(k.Line, "%s: merge keys (<<) are not supported: write the keys out", what)
			continue
		}
		key := k.Value
		if !contains(known, key) {
			p.errorf(k.Line, "unknown key %q in %s (known: %s)", key, what, strings.Join(known, ", "))
			continue
		}
		if first, dup := lines[key]; dup {
			p.errorf(k.Line, "duplicate key %q in %s (first at line %d)", key, what, first)
			continue
		}
		lines[key] = k.Line
		out[key] = v
	}
	return out, true
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// list returns the items of a sequence; null is the empty list.
func (p *parser) list(n *yaml.Node, what string) ([]*yaml.Node, bool) {
	n = p.resolve(n)
	if n == nil {
		return nil, false
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return nil, true
	}
	if n.Kind != yaml.SequenceNode {
		p.errorf(n.Line, "%s: want a list, got %s", what, describe(n))
		return nil, false
	}
	if !p.checkTag(n) {
		return nil, false
	}
	return n.Content, true
}

// str returns a scalar as the text it was written as: a name such as
// 2024 or 1.10 stays as written.
func (p *parser) str(n *yaml.Node, what string) (string, bool) {
	n = p.resolve(n)
	if n == nil {
		return "", false
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" {
		p.errorf(n.Line, "%s: want a string, got %s", what, describe(n))
		return "", false
	}
	if !p.checkTag(n) {
		return "", false
	}
	return n.Value, true
}

func (p *parser) boolean(n *yaml.Node, what string) (bool, bool) {
	n = p.resolve(n)
	if n == nil {
		return false, false
	}
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		p.errorf(n.Line, "%s: want true or false, got %s", what, describe(n))
		return false, false
	}
	return b, true
}
