package policy

import (
	"strings"
	"testing"
)

func rule(t *testing.T, filter string) *Rule {
	t.Helper()
	cfg, err := Parse("t.yaml", []byte("profiles:\n  - name: p\n    filters:\n      - "+strings.ReplaceAll(strings.TrimSpace(filter), "\n", "\n        ")+"\n"))
	if err != nil {
		t.Fatalf("%v\n%s", err, filter)
	}
	p, err := Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p.Rules[0]
}

func comps(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// covers reports whether the rule covers the file path, as the engine
// decides it: by the relation of the file's directory and its name.
func covers(r *Rule, file string) bool {
	i := strings.LastIndexByte(file, '/')
	dir, name := file[:i], file[i+1:]
	return r.MatchName(r.RelationOf(comps(dir)), name)
}

func TestCoverage(t *testing.T) {
	for _, tc := range []struct {
		filter string
		yes    []string
		no     []string
	}{
		{"path: /etc/shadow", []string{"/etc/shadow"}, []string{"/etc/shadowX", "/etc/passwd", "/etc/sub/shadow", "/shadow"}},
		{"path: /etc/ssl/private", []string{"/etc/ssl/private", "/etc/ssl/private/key.pem"}, []string{"/etc/ssl/private/sub/key.pem", "/etc/ssl/cert.pem"}},
		{"path: /etc/ssl\nregex: '.*\\.pem'", []string{"/etc/ssl/a.pem"}, []string{"/etc/ssl/a.key", "/etc/ssl/x/a.pem", "/etc/ssl"}},
		{"path: /etc/ssl\nregex: '.*\\.pem'\nrecursive: true", []string{"/etc/ssl/a.pem", "/etc/ssl/x/y/a.pem"}, []string{"/etc/ssl/x/a.key", "/etc/other/a.pem"}},
		{"path: /home/.*/\\.ssh\nregex: '.*'", []string{"/home/bob/.ssh/id_rsa", "/home/alice/.ssh/known_hosts"}, []string{"/home/bob/ssh/id_rsa", "/home/bob/x/.ssh/id_rsa", "/home/.ssh/id_rsa"}},
		{"path: /etc/resolv\\.conf", []string{"/etc/resolv.conf"}, []string{"/etc/resolvXconf"}},
		{"path: /etc/resolv.conf", []string{"/etc/resolv.conf"}, []string{"/etc/resolvXconf"}}, // literal: the dot is a dot
		{"path: /lib\nregex: 'libc\\..*'\nrecursive: true", []string{"/lib/libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6"}, []string{"/lib/libm.so.6"}},
	} {
		r := rule(t, tc.filter)
		for _, f := range tc.yes {
			if !covers(r, f) {
				t.Errorf("%q should cover %s", tc.filter, f)
			}
		}
		for _, f := range tc.no {
			if covers(r, f) {
				t.Errorf("%q should not cover %s", tc.filter, f)
			}
		}
	}
}

func TestRelationsGuideTheWalk(t *testing.T) {
	r := rule(t, "path: /home/.*/\\.ssh\nregex: '.*'")
	if rel := r.RelationOf(comps("/home")); !rel.Has(RelScaffold) || rel.Covers() {
		t.Errorf("/home: %b", rel)
	}
	if rel := r.RelationOf(comps("/home/bob")); !rel.Has(RelScaffold) {
		t.Errorf("/home/bob: %b", rel)
	}
	if rel := r.RelationOf(comps("/home/bob/.ssh")); !rel.Has(RelPath) {
		t.Errorf("/home/bob/.ssh: %b", rel)
	}
	if rel := r.RelationOf(comps("/var")); rel != 0 {
		t.Errorf("/var: %b", rel)
	}
	if rel := r.ChildRelation(comps("/home/bob/.ssh"), RelPath, "sub"); rel != 0 {
		t.Errorf("non-recursive rule descends into .ssh/sub: %b", rel)
	}
	rec := rule(t, "path: /data\nrecursive: true")
	if rel := rec.ChildRelation(comps("/data"), RelPath, "sub"); !rel.Has(RelUnder) {
		t.Errorf("recursive rule does not reach /data/sub: %b", rel)
	}
	if lit, ok := r.LiteralAt(0); !ok || lit != "home" {
		t.Errorf("LiteralAt(0) = %q %v", lit, ok)
	}
	if _, ok := r.LiteralAt(1); ok {
		t.Error("a regex component taken for a literal")
	}
}

func TestAllowEntries(t *testing.T) {
	r := rule(t, "path: /etc/shadow\nbehavior: block\nallow: [/usr/sbin/unix_chkpwd, passwd, /usr/sbin/unix_chkpwd]")
	if got := r.AllowExePaths(); len(got) != 1 || got[0] != "/usr/sbin/unix_chkpwd" {
		t.Errorf("exe paths %v", got)
	}
	if !r.HasNames() || r.AllowEntries() != 3 {
		t.Errorf("names %v entries %d", r.HasNames(), r.AllowEntries())
	}
	for _, tc := range []struct {
		exe, comm string
		want      bool
	}{
		{"passwd", "passwd", true},
		{"passwd", "x", true}, // base name: names prove nothing, as documented
		{"cat", "passwd", true},
		{"cat", "cat", false},
		{"", "", false},
		{"unix_chkpwd", "unix_chkpwd", false}, // a path entry is never matched by name or text
	} {
		if got := r.AllowsName(tc.exe, tc.comm); got != tc.want {
			t.Errorf("AllowsName(%q, %q) = %v, want %v", tc.exe, tc.comm, got, tc.want)
		}
	}
}

// TestPatternsMatchNamesWithNewlines: a name may hold any byte but "/"
// and NUL, newlines included; a regex filter, or a regex path element,
// matches the whole name whatever it holds.
func TestPatternsMatchNamesWithNewlines(t *testing.T) {
	for _, tc := range []struct {
		filter, yes, no string
	}{
		{"{path: /k, regex: '.*\\.pem'}", "/k/a\nb.pem", "/k/a.pem\nx"},
		{"{path: /k, regex: 'id_.*'}", "/k/id_\nrsa", "/k/x\nid_rsa"},
		{"{path: '/home/.*/key'}", "/home/a\nb/key", "/home/a/b/key"},
	} {
		r := rule(t, tc.filter)
		if !covers(r, tc.yes) {
			t.Errorf("%s does not cover %q", tc.filter, tc.yes)
		}
		if covers(r, tc.no) {
			t.Errorf("%s covers %q", tc.filter, tc.no)
		}
	}
}
