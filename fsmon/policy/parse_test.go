package policy

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

const testFile = "test.yaml"

func mustParse(t *testing.T, src string) *Config {
	t.Helper()
	cfg, err := Parse(testFile, []byte(src))
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	return cfg
}

func TestParseValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		want *Config
	}{{
		name: "minimal",
		src: `
profiles:
  - name: p
`,
		want: &Config{File: testFile, Mode: fsmon.ModeMonitor, Profiles: []Profile{
			{Name: "p", Mode: fsmon.ModeMonitor, Line: 3},
		}},
	}, {
		name: "every key",
		src: `
mode: learn
profiles:
  - name: host
    host: true
    mode: protect
    filters:
      - name: shadow
        path: /etc/shadow
        behavior: block
        allow: [/usr/sbin/unix_chkpwd, passwd]
        report_access: true
      - path: /etc/ssl/private/
        regex: '.*\.pem'
        recursive: true
        behavior: monitor
  - name: web
    containers: {name: 'web-*', id: 'abc*', image: 'nginx:*'}
    filters:
      - path: //var//log/../lib/x
      - path: /home/.*/\.ssh/
        regex: .*
`,
		want: &Config{File: testFile, Mode: fsmon.ModeLearn, Profiles: []Profile{
			{Name: "host", Host: true, Mode: fsmon.ModeProtect, Line: 4, Filters: []Filter{
				{Name: "shadow", Path: "/etc/shadow", Behavior: BehaviorBlock,
					Allow: []string{"/usr/sbin/unix_chkpwd", "passwd"}, ReportAccess: true, Line: 8},
				{Name: "/etc/ssl/private", Path: "/etc/ssl/private", Regex: `.*\.pem`, Recursive: true,
					Behavior: BehaviorMonitor, Line: 13},
			}},
			{Name: "web", Containers: Selector{Name: "web-*", ID: "abc*", Image: "nginx:*"},
				Mode: fsmon.ModeLearn, Line: 17, Filters: []Filter{
					{Name: "/var/lib/x", Path: "/var/lib/x", Behavior: BehaviorMonitor, Line: 20},
					{Name: `/home/.*/\.ssh`, Path: `/home/.*/\.ssh`, Regex: ".*", Behavior: BehaviorMonitor, Line: 21},
				}},
		}},
	}, {
		name: "block without allow outside protect",
		src: `
mode: protect
profiles:
  - name: p
    mode: learn
    filters:
      - {path: /etc/shadow, behavior: block}
`,
		want: &Config{File: testFile, Mode: fsmon.ModeProtect, Profiles: []Profile{
			{Name: "p", Mode: fsmon.ModeLearn, Line: 4, Filters: []Filter{
				{Name: "/etc/shadow", Path: "/etc/shadow", Behavior: BehaviorBlock, Line: 7},
			}},
		}},
	}, {
		name: "null lists, numbers as names, aliases",
		src: `
profiles:
  - name: 2024
    filters:
  - name: 1.10
    filters:
      - path: /a
        allow: &who [sshd, /usr/bin/ssh]
        behavior: block
      - path: /b
        allow: *who
        behavior: block
`,
		want: &Config{File: testFile, Mode: fsmon.ModeMonitor, Profiles: []Profile{
			{Name: "2024", Mode: fsmon.ModeMonitor, Line: 3},
			{Name: "1.10", Mode: fsmon.ModeMonitor, Line: 5, Filters: []Filter{
				{Name: "/a", Path: "/a", Behavior: BehaviorBlock, Allow: []string{"sshd", "/usr/bin/ssh"}, Line: 7},
				{Name: "/b", Path: "/b", Behavior: BehaviorBlock, Allow: []string{"sshd", "/usr/bin/ssh"}, Line: 10},
			}},
		}},
	}, {
		name: "pattern paths keep dot elements",
		src: `
profiles:
  - name: p
    filters:
      - path: /x/.+/../y/
      - path: /
        regex: core
`,
		want: &Config{File: testFile, Mode: fsmon.ModeMonitor, Profiles: []Profile{
			{Name: "p", Mode: fsmon.ModeMonitor, Line: 3, Filters: []Filter{
				{Name: "/x/.+/../y", Path: "/x/.+/../y", Behavior: BehaviorMonitor, Line: 5},
				{Name: "/", Path: "/", Regex: "core", Behavior: BehaviorMonitor, Line: 6},
			}},
		}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := mustParse(t, tc.src)
			if string(got.Source) != tc.src {
				t.Errorf("Source is %q, want the file's content", got.Source)
			}
			got.Source = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestParseImportantFiles(t *testing.T) {
	cfg := mustParse(t, `
important_files: true
profiles:
  - name: a
    filters:
      - name: /etc/shadow
        path: /etc/shadow
        behavior: block
        allow: [passwd]
  - name: b
`)
	important := ImportantFiles()
	n := len(Default().Profiles[0].Filters)
	if len(important) != n {
		t.Fatalf("ImportantFiles: %d filters, want the default's %d", len(important), n)
	}
	a, b := cfg.Profiles[0].Filters, cfg.Profiles[1].Filters
	if len(a) != n || len(b) != n {
		t.Fatalf("profile a has %d filters, b %d; want %d each (a's own shadow replacing the built-in one)", len(a), len(b), n)
	}
	if a[0].Behavior != BehaviorBlock || a[0].Line != 6 {
		t.Errorf("a's own /etc/shadow filter was replaced: %+v", a[0])
	}
	for _, f := range a[1:] {
		if f.Name == "/etc/shadow" {
			t.Errorf("/etc/shadow twice in profile a")
		}
		if f.Line != 2 {
			t.Errorf("built-in filter %q: line %d, want 2 (the important_files key)", f.Name, f.Line)
		}
	}
	// The profiles must not share allow slices or anything else.
	b[0].Name = "changed"
	if ImportantFiles()[0].Name == "changed" {
		t.Error("ImportantFiles shares state with a parsed configuration")
	}
}

func TestDefault(t *testing.T) {
	cfg := Default()
	if cfg.File != "" || cfg.Mode != fsmon.ModeMonitor || cfg.ImportantFiles {
		t.Errorf("Default: %+v", cfg)
	}
	if len(cfg.Profiles) != 1 {
		t.Fatalf("Default: %d profiles, want 1", len(cfg.Profiles))
	}
	p := cfg.Profiles[0]
	if p.Name != "default" || p.Host || !p.Containers.IsZero() || p.Mode != fsmon.ModeMonitor {
		t.Errorf("default profile: %+v", p)
	}
	for _, f := range p.Filters {
		if f.Behavior != BehaviorMonitor || len(f.Allow) != 0 || f.ReportAccess {
			t.Errorf("filter %q: %+v, want monitor only", f.Name, f)
		}
	}
	pol, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	coveredBy := func(file string) string {
		for _, r := range pol.Rules {
			if covers(r, file) {
				return r.Name
			}
		}
		return ""
	}
	// The seed's ImportantFiles (docs/config.md), the files a careful
	// operator expects watched on a Linux host, and the loader and libc
	// where the distributions put them.
	for _, file := range []string{
		"/var/lib/dpkg/status", "/var/lib/rpm/Packages", "/lib/apk/db/installed",
		"/etc/hosts", "/etc/passwd", "/etc/shadow", "/etc/resolv.conf", "/home/bob/.ssh/authorized_keys",
		"/bin/sh", "/sbin/init", "/usr/bin/sudo", "/usr/sbin/sshd", "/usr/local/bin/x", "/usr/local/sbin/y",
		"/etc/group", "/etc/gshadow", "/etc/sudoers", "/etc/sudoers.d/90-cloud", "/root/.ssh/authorized_keys",
		"/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d/50-x.conf", "/etc/ld.so.preload",
		"/etc/crontab", "/etc/cron.d/job", "/etc/cron.daily/logrotate", "/var/spool/cron/crontabs/root",
		"/etc/systemd/system/x.service", "/etc/systemd/system/multi-user.target.wants/x.service",
		"/usr/lib/systemd/system/ssh.service", "/etc/modprobe.d/blacklist.conf", "/usr/lib/modprobe.d/x.conf",
		"/etc/modules-load.d/m.conf", "/etc/modules",
		"/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1", "/lib64/ld-linux-x86-64.so.2",
		"/lib64/libc.so.6", "/lib/ld-musl-x86_64.so.1", "/lib/libc.musl-x86_64.so.1", "/lib/x86_64-linux-gnu/libpthread.so.0",
	} {
		if coveredBy(file) == "" {
			t.Errorf("%s: no built-in filter covers it", file)
		}
	}
	for _, file := range []string{"/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/perl/x.pm", "/usr/lib/python3/dist-packages/libc.so.6", "/etc/shadow-"} {
		if by := coveredBy(file); by != "" {
			t.Errorf("%s: covered by %q, want no built-in filter", file, by)
		}
	}
	// No recursive filter reaches all of a library tree: the ancestor's
	// /lib filters followed every directory under /usr/lib.
	for _, r := range pol.Rules {
		switch r.Root() {
		case "/", "/lib", "/lib64", "/lib32", "/usr", "/usr/lib", "/usr/lib64", "/usr/lib32":
			if r.Recursive {
				t.Errorf("filter %q: recursive from %s", r.Name, r.Root())
			}
		}
	}
	if !reflect.DeepEqual(ImportantFiles(), p.Filters) {
		t.Error("ImportantFiles differs from the default profile's filters")
	}
	if _, err := Compile(cfg); err != nil {
		t.Errorf("Compile(Default()): %v", err)
	}
}

func TestDefaultErrorsNameTheFile(t *testing.T) {
	_, err := Parse(DefaultFile, []byte("mode: x\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "<default>:1: ") {
		t.Errorf("got %v, want an error of <default>", err)
	}
}

// TestParseErrors covers every validation: want lists the errors as
// "LINE: message" where message is a regular expression (anchored), so
// that every case pins its lines and a few pin the whole text.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		want []string
	}{{
		name: "yaml syntax",
		src:  "profiles:\n  - name: a\n  bad: [\n",
		want: []string{`1: YAML: did not find expected '-' indicator`},
	}, {
		name: "yaml unterminated",
		src:  "profiles:\n  - name: a\n    filters:\n      - path: '/a\n",
		want: []string{`4: YAML: found unexpected end of stream`},
	}, {
		name: "yaml tab",
		src:  "profiles:\n\t- name: a\n",
		want: []string{`2: YAML: found character that cannot start any token`},
	}, {
		name: "empty file",
		src:  "# nothing\n",
		want: []string{`1: empty configuration: it needs at least one profile`},
	}, {
		name: "null document",
		src:  "~\n",
		want: []string{`1: empty configuration: .*`},
	}, {
		name: "not a mapping",
		src:  "- a\n- b\n",
		want: []string{`1: the configuration: want a mapping, got a list`},
	}, {
		name: "no profiles",
		src:  "mode: monitor\nprofiles: []\n",
		want: []string{`2: no profiles: the configuration needs at least one \(a profile with only a name and filters applies everywhere\)`},
	}, {
		name: "no profiles key",
		src:  "mode: monitor\n",
		want: []string{`1: no profiles: .*`},
	}, {
		name: "two documents",
		src:  "profiles: [{name: a}]\n---\nprofiles: [{name: b}]\n",
		want: []string{`2: YAML: more than one YAML document; a configuration file holds one`},
	}, {
		name: "unknown keys",
		src: `
mdoe: protect
profiles:
  - name: a
    hosts: true
    containers: {names: x}
    filters:
      - path: /a
        recurse: true
`,
		want: []string{
			`2: unknown key "mdoe" in the configuration \(known: mode, important_files, profiles\)`,
			`5: unknown key "hosts" in a profile .*`,
			`6: unknown key "names" in containers .*`,
			`9: unknown key "recurse" in a filter \(known: name, path, regex, recursive, behavior, allow, report_access\)`,
		},
	}, {
		name: "duplicate and odd keys",
		src: `
profiles:
  - name: a
    name: b
    ? [x]
    : y
    <<: {host: true}
`,
		want: []string{
			`4: duplicate key "name" in a profile \(first at line 3\)`,
			`5: a profile: a key must be a string, got a list`,
			`7: a profile: merge keys \(<<\) are not supported: write the keys out`,
		},
	}, {
		name: "wrong types",
		src: `
mode: [protect]
important_files: yes
profiles:
  - name: [a]
    host: 1
    containers: web
    filters:
      path: /a
  - name: b
    mode: ~
    filters:
      - /etc/shadow
      - path: {a: b}
        recursive: "true"
        report_access: on
        allow: sshd
      - path: /c
        allow: [[sshd]]
        regex: ~
`,
		want: []string{
			`2: mode: want a string, got a list`,
			`3: important_files: want true or false, got "yes"`,
			`5: profile name: want a string, got a list`,
			`6: host: want true or false, got 1`,
			`7: containers: want a mapping, got "web"`,
			`9: filters: want a list, got a mapping`,
			`11: mode: want a string, got nothing \(null\)`,
			`13: a filter: want a mapping, got "/etc/shadow"`,
			`14: path: want a string, got a mapping`,
			`15: recursive: want true or false, got "true"`,
			`16: report_access: want true or false, got "on"`,
			`17: allow: want a list, got "sshd"`,
			`19: allow entry: want a string, got a list`,
			`20: regex: want a string, got nothing \(null\)`,
		},
	}, {
		name: "tags",
		src:  "profiles:\n  - name: !env NAME\n",
		want: []string{`2: unsupported YAML tag !env`},
	}, {
		name: "invalid regular expressions",
		src: `
profiles:
  - name: a
    filters:
      - path: /etc/(shadow
      - path: /etc
        regex: '*.conf'
      - path: /a)(b
      - path: /etc/[a/b]
      - path: /x
        regex: a/b
`,
		want: []string{
			"5: path \"/etc/\\(shadow\": invalid regular expression: missing closing \\): `/etc/\\(shadow`",
			`7: regex "\*.conf": invalid regular expression: missing argument to repetition operator: .*`,
			`8: path "/a\)\(b": invalid regular expression: unexpected \).*`,
			`9: path "/etc/\[a/b\]": element "\[a" is not a regular expression on its own: a path pattern is matched one /-separated element at a time, so a group or class cannot hold a /`,
			`11: regex "a/b" holds a /, but it is matched against file names, which never do; put directories in path`,
		},
	}, {
		name: "relative and empty paths",
		src: `
profiles:
  - name: a
    filters:
      - path: etc/shadow
      - path: ^/etc/.*$
      - path: ""
      - name: x
      - path: "/a\0b"
`,
		want: []string{
			`5: path "etc/shadow" is not absolute: it must start with /`,
			`6: path "\^/etc/\.\*\$" is not absolute: it must start with / \(leave out \^ and \$: a path is anchored at both ends already\)`,
			`7: path is empty`,
			`8: filter has no path`,
			`9: path "/a\\x00b" contains a NUL byte`,
		},
	}, {
		name: "path not usable as a directory",
		src: `
profiles:
  - name: a
    filters:
      - path: /etc/()/x
        regex: .*
      - path: /etc/$
`,
		want: []string{
			`5: path "/etc/\(\)/x" is not usable as a directory, which regex needs: its element "\(\)" matches no directory name`,
			`7: path "/etc/\$": element "\$" matches no file or directory name`,
		},
	}, {
		name: "unknown mode and behavior",
		src: `
mode: enforce
profiles:
  - name: a
    mode: Protect
    filters:
      - path: /a
        behavior: deny
`,
		want: []string{
			`2: unknown mode "enforce": want learn, monitor or protect`,
			`5: unknown mode "Protect": .*`,
			`8: unknown behavior "deny": want monitor or block`,
		},
	}, {
		name: "duplicate names",
		src: `
profiles:
  - name: a
    filters:
      - path: /etc/shadow
      - path: /etc/shadow/
      - {name: x, path: /a}
      - {name: x, path: /b}
  - name: a
`,
		want: []string{
			`6: duplicate filter name "/etc/shadow" in profile "a" \(first at line 5\) \(a filter's name defaults to its path: name them apart\)`,
			`8: duplicate filter name "x" in profile "a" \(first at line 7\)$`,
			`9: duplicate profile name "a" \(first at line 3\)`,
		},
	}, {
		name: "duplicate through an alias",
		src:  "profiles:\n  - &p {name: a}\n  - *p\n",
		want: []string{`3: duplicate profile name "a" \(first at line 2\)`},
	}, {
		name: "names",
		src: `
profiles:
  - host: true
  - name: ""
  - name: "a\tb"
    filters:
      - {name: "", path: /a}
`,
		want: []string{
			`3: profile has no name`,
			`4: profile name is empty`,
			`5: profile name "a\\tb" contains a control character`,
			`7: filter name is empty`,
		},
	}, {
		name: "protect lockout",
		src: `
mode: protect
profiles:
  - name: a
    filters:
      - name: shadow
        path: /etc/shadow
        behavior: block
      - path: /etc/gshadow
        behavior: block
        allow: []
`,
		want: []string{
			`6: filter "shadow" blocks in protect mode with an empty allow list: every process, root included, would be denied; list who may open it in allow, or use monitor or learn mode`,
			`11: filter "/etc/gshadow" blocks in protect mode .*`,
		},
	}, {
		name: "allow entries",
		src: `
profiles:
  - name: a
    filters:
      - path: /a
        behavior: block
        allow:
          - sshd
          - ""
          - ~
          - "x\0y"
`,
		want: []string{
			`9: allow entry 2 is empty`,
			`10: allow entry: want a string, got nothing \(null\)`,
			`11: allow entry 4 contains a NUL byte`,
		},
	}, {
		name: "container globs",
		src: `
profiles:
  - name: a
    containers:
      name: 'web-['
      id: ""
      image: 'x\'
  - name: b
    containers: {}
`,
		want: []string{
			`5: containers.name: bad glob "web-\[": syntax error in pattern`,
			`6: containers.id is empty: leave it out instead`,
			`7: containers.image: bad glob .*`,
			`9: containers: give at least one of name, id, image, namespace, pod or labels \(leave containers out to apply the profile everywhere\)`,
		},
	}, {
		name: "pod selectors",
		src: `
profiles:
  - name: a
    containers:
      namespace: 'prod-['
      pod: ""
      labels:
        app: 'web-['
        "app.kubernetes.io/*": x
        -bad: x
        Example.com/tier: x
        tier: [a, b]
  - name: b
    containers: {labels: {}}
  - name: c
    containers: {labels: [app]}
  - name: d
    containers:
      labels: {app: a, app: b}
    namespazes: x
`,
		want: []string{
			`5: containers.namespace: bad glob "prod-\[": syntax error in pattern`,
			`6: containers.pod is empty: leave it out instead`,
			`8: containers.labels.app: bad glob "web-\[": syntax error in pattern`,
			`9: containers.labels: label key "app.kubernetes.io/\*": the name must be .*no globs.*`,
			`10: containers.labels: label key "-bad": the name must be .*`,
			`11: containers.labels: label key "Example.com/tier": the prefix before / must be a DNS subdomain .*`,
			`12: containers.labels.tier: want a string, got .*`,
			`14: containers.labels is empty: leave it out instead`,
			`16: containers.labels: want a mapping of label keys to values, got .*`,
			`19: duplicate label "app" in containers.labels \(first at line 19\)`,
			`20: unknown key "namespazes" in a profile .*`,
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse(testFile, []byte(tc.src))
			if cfg != nil {
				t.Errorf("got a configuration and %v", err)
			}
			var list *ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error %v (%T) is not an *ErrorList", err, err)
			}
			var got []string
			for _, e := range *list {
				if e.File != testFile {
					t.Errorf("error of file %q", e.File)
				}
				got = append(got, strings.TrimPrefix(e.Error(), testFile+":"))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d errors, want %d:\n%s", len(got), len(tc.want), strings.Join(got, "\n"))
			}
			for i, w := range tc.want {
				if !regexp.MustCompile(`^` + w + `$`).MatchString(got[i]) {
					t.Errorf("error %d:\n got %s\nwant %s", i, got[i], w)
				}
			}
			if want := testFile + ":" + strings.Join(got, "\n"+testFile+":"); err.Error() != want {
				t.Errorf("Error():\n%s\nwant\n%s", err, want)
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	big := make([]byte, MaxFileSize+1)
	_, err := Parse(testFile, big)
	if err == nil || err.Error() != "test.yaml:1: file is larger than the 32 MiB limit of a configuration" {
		t.Errorf("huge file: %v", err)
	}

	deep := strings.Repeat("[", 20000) + strings.Repeat("]", 20000)
	if _, err := Parse(testFile, []byte("profiles: "+deep)); err == nil {
		t.Error("deep nesting: no error")
	}
	deepMap := "profiles:\n"
	for i := range 200 {
		deepMap += strings.Repeat(" ", i) + "a:\n"
	}
	if _, err := Parse(testFile, []byte(deepMap)); err == nil {
		t.Error("deep mapping: no error")
	}

	// A billion laughs: each level doubles the nodes an alias expands to.
	var b strings.Builder
	b.WriteString("x0: &a0 [{path: /a}]\n")
	for i := 1; i < 40; i++ {
		b.WriteString("x" + strconv.Itoa(i) + ": &a" + strconv.Itoa(i) + " [*a" + strconv.Itoa(i-1) + ", *a" + strconv.Itoa(i-1) + "]\n")
	}
	_, err = Parse(testFile, []byte(b.String()))
	if err == nil {
		t.Fatal("aliases: no error")
	}
	var list *ErrorList
	if !errors.As(err, &list) || len(*list) > maxErrors+1 {
		t.Errorf("aliases: %d errors", len(*list))
	}

	// Aliases multiply: one anchored list of filters used by many
	// profiles is many times the nodes of the file.
	var bomb strings.Builder
	bomb.WriteString("profiles:\n  - name: p0\n    filters: &f\n")
	for i := range 2000 {
		bomb.WriteString("      - path: /a" + strconv.Itoa(i) + "\n")
	}
	for i := 1; i < 1000; i++ {
		bomb.WriteString("  - {name: p" + strconv.Itoa(i) + ", filters: *f}\n")
	}
	_, err = Parse(testFile, []byte(bomb.String()))
	if err == nil || !strings.Contains(err.Error(), "configuration too complex") {
		t.Errorf("alias bomb: %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("profiles:\n  - name: a\n    mode: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(file)
	if err == nil || err.Error() != file+`:3: unknown mode "x": want learn, monitor or protect` {
		t.Errorf("Load: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want fs.ErrNotExist", err)
	}
	if err := os.WriteFile(file, make([]byte, MaxFileSize+10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(file); err == nil || !strings.Contains(err.Error(), ":1: file is larger than") {
		t.Errorf("Load of a huge file: %v", err)
	}
}

// TestExamples parses every shipped example: they are documentation
// that must not rot.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no examples found in ../../examples")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			cfg, err := Load(file)
			if err != nil {
				t.Fatalf("%v", err)
			}
			if _, err := Compile(cfg); err != nil {
				t.Errorf("Compile: %v", err)
			}
		})
	}
}

// errorLine is what every line of a Parse error must look like.
var errorLine = regexp.MustCompile(`^` + regexp.QuoteMeta(testFile) + `:[1-9][0-9]*: `)

func FuzzParse(f *testing.F) {
	f.Add(defaultYAML)
	for _, s := range []string{
		"",
		"profiles: [{name: a}]",
		"mode: protect\nimportant_files: true\nprofiles:\n  - name: h\n    host: true\n    filters:\n      - {path: /etc/shadow, behavior: block, allow: [passwd]}\n",
		"profiles:\n  - name: w\n    containers: {name: 'web-*'}\n    filters:\n      - path: /home/.*/\\.ssh\n        regex: .*\n        recursive: true\n",
		"profiles:\n  - name: a\n    filters:\n      - path: /etc/(x\n      - path: rel\n        behavior: deny\n",
		"profiles: &p [*p]",
		"a: &a [*a]",
		"profiles:\n\t- x",
		"---\n---\n",
		"profiles:\n  - name: a\n    <<: {host: true}\n",
	} {
		f.Add([]byte(s))
	}
	for _, file := range exampleFiles(f) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(testFile, data)
		if cfg == nil && err == nil {
			t.Fatal("nil configuration and nil error")
		}
		if err != nil {
			if cfg != nil {
				t.Fatal("both a configuration and an error")
			}
			var list *ErrorList
			if !errors.As(err, &list) || len(*list) == 0 {
				t.Fatalf("error %v is not a non-empty *ErrorList", err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !errorLine.MatchString(line) {
					t.Fatalf("error line without FILE:LINE: prefix: %q", line)
				}
			}
			return
		}
		// A valid configuration must compile: validation is the place
		// to reject what the engine cannot use.
		if _, err := Compile(cfg); err != nil {
			t.Fatalf("valid configuration does not compile: %v", err)
		}
	})
}

func exampleFiles(tb testing.TB) []string {
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	return files
}
