package policy

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

const learnYAML = `# my host
mode: learn
profiles:
  - name: host
    host: true
    filters:
      - name: shadow
        path: /etc/shadow
        behavior: block
        allow: [passwd]   # by name
      - path: /etc/hosts
  - name: build
    mode: learn
    filters:
      - name: docker-config
        path: /root/.docker/config.json
        behavior: block
  - name: db
    mode: learn
    filters:
      - name: data
        path: /var/lib/db
        behavior: block
  - name: web
    mode: monitor
    filters:
      - name: keys
        path: /etc/ssl/private
        regex: '.*\.pem'
        behavior: block
`

func TestWithLearned(t *testing.T) {
	cfg, err := Parse("learn.yaml", []byte(learnYAML))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	learned := []LearnedAllow{
		{Profile: "host", Filter: "shadow", Executable: "/usr/sbin/unix_chkpwd", Count: 7, First: t0, Last: t0.Add(time.Hour)},
		{Profile: "host", Filter: "shadow", Executable: "/usr/bin/weird: name #x", Count: 1, First: t0, Last: t0},
		{Profile: "host", Filter: "shadow", Executable: "", Count: 2, First: t0, Last: t0},
		{Profile: "db", Filter: "data", Executable: "/usr/sbin/db", Count: 1, First: t0, Last: t0},
		{Profile: "web", Filter: "keys", Executable: "/usr/sbin/nginx", Count: 3, First: t0, Last: t0},
		{Profile: "gone", Filter: "x", Executable: "/usr/bin/cat", Count: 1, First: t0, Last: t0},
	}
	out, err := WithLearned(cfg, learned, fsmon.ModeProtect, t0)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", out)
	got, err := Parse("out.yaml", out)
	if err != nil {
		t.Fatalf("generated configuration does not parse: %v\n%s", err, out)
	}
	if got.Mode != fsmon.ModeProtect {
		t.Errorf("file mode %s, want protect", got.Mode)
	}
	want := map[string]fsmon.Mode{"host": fsmon.ModeProtect, "build": fsmon.ModeLearn, "db": fsmon.ModeProtect, "web": fsmon.ModeMonitor}
	allow := map[string][]string{}
	for _, p := range got.Profiles {
		if p.Mode != want[p.Name] {
			t.Errorf("profile %s: mode %s, want %s", p.Name, p.Mode, want[p.Name])
		}
		for _, f := range p.Filters {
			allow[p.Name+"/"+f.Name] = f.Allow
		}
	}
	if a := strings.Join(allow["host/shadow"], ","); a != "passwd,/usr/sbin/unix_chkpwd,/usr/bin/weird: name #x" {
		t.Errorf("host/shadow allows %s", a)
	}
	if a := strings.Join(allow["web/keys"], ","); a != "/usr/sbin/nginx" {
		t.Errorf("web/keys allows %s", a)
	}
	for _, s := range []string{
		"# my host",
		"/usr/sbin/unix_chkpwd # learned: 7 opens, first 2026-12-02T10:00:00Z, last 2026-12-02T11:00:00Z",
		"not added: (executable unknown) on host/shadow",
		"not added: /usr/bin/cat on gone/x (the configuration has no such filter)",
		`still learn: nothing was learned on "docker-config"`,
		"profiles switched from learn to protect: host, db.",
	} {
		if !strings.Contains(string(out), s) {
			t.Errorf("generated configuration lacks %q", s)
		}
	}
}

// TestWithLearnedMonitor: the monitor file is the protect file but for
// the modes, so that its violations are the protect file's denies.
func TestWithLearnedMonitor(t *testing.T) {
	cfg, err := Parse("learn.yaml", []byte(learnYAML))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	ls := []LearnedAllow{{Profile: "host", Filter: "shadow", Executable: "/usr/sbin/unix_chkpwd", Count: 1, First: t0, Last: t0}}
	prot, err := WithLearned(cfg, ls, fsmon.ModeProtect, t0)
	if err != nil {
		t.Fatal(err)
	}
	mon, err := WithLearned(cfg, ls, fsmon.ModeMonitor, t0)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := Parse("p", prot)
	b, _ := Parse("m", mon)
	if a == nil || b == nil || b.Mode != fsmon.ModeMonitor || b.Profiles[0].Mode != fsmon.ModeMonitor || b.Profiles[1].Mode != fsmon.ModeLearn {
		t.Fatalf("monitor file:\n%s", mon)
	}
	for i := range a.Profiles {
		if !reflect.DeepEqual(a.Profiles[i].Filters, b.Profiles[i].Filters) {
			t.Errorf("profile %s: filters differ between the protect and the monitor file", a.Profiles[i].Name)
		}
	}
	if _, err := WithLearned(cfg, ls, fsmon.ModeLearn, t0); err == nil {
		t.Error("switching learn to learn accepted")
	}
}
