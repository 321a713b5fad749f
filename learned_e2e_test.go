package main

// The loop from learn to protect, as a user runs it: learn while real
// programs open the files, restart, generate the configuration
// (GET /learned?format=yaml), check it, run it in protect mode.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

func learnConfig(t *testing.T, dir, secret, filter string) string {
	t.Helper()
	cfg := filepath.Join(dir, "learn.yml")
	writeConfig(t, cfg, fmt.Sprintf(`# the app's secret, learned first
mode: learn
profiles:
  - name: app
    host: true
    filters:
      - name: %s
        path: %s
        behavior: block
`, filter, secret))
	return cfg
}

type learnedJSON struct {
	Profile, Filter, Executable string
	Count                       uint64
	Files                       []string
	Users                       []struct{ ID int64 }
	Host                        bool
	FirstSeen                   string `json:"first_seen"`
	LastSeen                    string `json:"last_seen"`
}

func getLearned(t *testing.T, d *daemon) map[string]learnedJSON {
	t.Helper()
	code, body := d.get(t, "/learned")
	var ls []learnedJSON
	if code != 200 || json.Unmarshal([]byte(body), &ls) != nil {
		t.Fatalf("GET /learned: %d %s", code, body)
	}
	out := map[string]learnedJSON{}
	for _, l := range ls {
		out[l.Profile+"/"+l.Filter+"/"+l.Executable] = l
	}
	return out
}

func learnedEvent(file, exe string) func(map[string]any) bool {
	return func(m map[string]any) bool {
		return m["event"] == "learned" && m["file.path"] == file && m["process.executable.path"] == exe
	}
}

func TestLearnRestartGenerateProtect(t *testing.T) {
	dir := t.TempDir()
	secret := secretFile(t)
	state := filepath.Join(dir, "state")
	cfg := learnConfig(t, dir, secret, "secret")
	d := startDaemon(t, "--config.file="+cfg, "--state.dir="+state)
	for _, p := range []string{"head", "tail"} {
		if out, err := runCmd(t, p, secret); err != nil || out != "s3cret\n" {
			t.Fatalf("%s in learn mode: %v %q", p, err, out)
		}
		d.event(t, "learned "+p, learnedEvent(secret, "/usr/bin/"+p))
	}
	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	if b := readFile(t, filepath.Join(state, "learned.json")); !strings.Contains(b, `"executable": "/usr/bin/tail"`) {
		t.Fatalf("learned set after SIGTERM lacks tail:\n%s", b)
	}

	// Restarted, and reloaded: the set is still there.
	d = startDaemon(t, "--config.file="+cfg, "--state.dir="+state)
	d.signal(t, syscall.SIGHUP)
	waitMetric(t, d, "fsmon_config_last_reload_successful", "1")
	d.waitLog(t, 1, "configuration reloaded")
	got := getLearned(t, d)
	for _, p := range []string{"head", "tail"} {
		l, ok := got["app/secret//usr/bin/"+p]
		if !ok || l.Count < 1 || len(l.Files) != 1 || l.Files[0] != secret || len(l.Users) != 1 || l.Users[0].ID != 0 || !l.Host || l.FirstSeen == "" {
			t.Fatalf("after restart and reload, /learned for %s: %+v (all: %+v)", p, l, got)
		}
	}
	code, gen := d.get(t, "/learned?format=yaml")
	if code != 200 {
		t.Fatalf("GET /learned?format=yaml: %d %s", code, gen)
	}
	for _, s := range []string{"# the app's secret, learned first", "mode: protect # was learn", "- /usr/bin/head # learned: ", "- /usr/bin/tail # learned: "} {
		if !strings.Contains(gen, s) {
			t.Errorf("generated configuration lacks %q:\n%s", s, gen)
		}
	}
	genFile := filepath.Join(dir, "protect.yml")
	writeConfig(t, genFile, gen)
	out, err := runCmd(t, testroot.Binary(t), "--config.check", "--config.file="+genFile)
	if err != nil || !strings.Contains(out, "valid") {
		t.Fatalf("--config.check of the generated file: %v %s\n%s", err, out, gen)
	}
	code, mon := d.get(t, "/learned?format=yaml&mode=monitor")
	monFile := filepath.Join(dir, "monitor.yml")
	writeConfig(t, monFile, mon)
	if code != 200 || !strings.Contains(mon, "mode: monitor # was learn") {
		t.Fatalf("GET /learned?format=yaml&mode=monitor: %d\n%s", code, mon)
	}
	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}

	// The monitor file: what the protect file would deny is a
	// violation, and nothing else is.
	d = startDaemon(t, "--config.file="+monFile, "--state.dir="+state)
	runCmd(t, "head", secret)
	if out, err := runCmd(t, "cat", secret); err != nil || out != "s3cret\n" {
		t.Fatalf("cat under the monitor file: %v %q", err, out)
	}
	d.event(t, "violation by cat", func(m map[string]any) bool {
		return m["event"] == "violation" && m["file.path"] == secret && m["process.executable.path"] == "/usr/bin/cat"
	})
	d.mu.Lock()
	for _, m := range d.lines {
		if m["file.path"] == secret && m["process.executable.path"] != "/usr/bin/cat" {
			t.Errorf("under the monitor file, an event of a learned program: %v", m)
		}
	}
	d.mu.Unlock()
	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}

	// The generated file in protect mode: what was learned works, the
	// rest is denied.
	d = startDaemon(t, "--config.file="+genFile, "--state.dir="+state)
	for _, p := range []string{"head", "tail"} {
		if out, err := runCmd(t, p, secret); err != nil || out != "s3cret\n" {
			t.Fatalf("learned %s under the generated profile: %v %q", p, err, out)
		}
	}
	mustBeDenied(t, secret, "cat under the generated profile")
	d.event(t, "denied cat", func(m map[string]any) bool {
		return m["event"] == "denied" && m["file.path"] == secret && m["process.executable.path"] == "/usr/bin/cat" && m["mode"] == "protect"
	})
}

func TestReloadDropsWhatARemovedFilterLearned(t *testing.T) {
	dir := t.TempDir()
	secret := secretFile(t)
	state := filepath.Join(dir, "state")
	cfg := learnConfig(t, dir, secret, "secret")
	d := startDaemon(t, "--config.file="+cfg, "--state.dir="+state)
	runCmd(t, "head", secret)
	d.event(t, "learned head", learnedEvent(secret, "/usr/bin/head"))
	if got := getLearned(t, d); len(got) != 1 {
		t.Fatalf("/learned: %+v, want head only", got)
	}
	learnConfig(t, dir, secret, "renamed") // the filter "secret" is gone
	d.signal(t, syscall.SIGHUP)
	d.waitLog(t, 1, "learned entries dropped")
	if got := getLearned(t, d); len(got) != 0 {
		t.Fatalf("/learned after the filter went: %+v, want nothing", got)
	}
	d.signal(t, syscall.SIGTERM)
	if err := d.wait(t); err != nil {
		t.Fatal(err)
	}
	if b := readFile(t, filepath.Join(state, "learned.json")); strings.Contains(b, "/usr/bin/head") {
		t.Fatalf("the file still has what the removed filter learned:\n%s", b)
	}
}

func TestBadLearnStateIsSetAside(t *testing.T) {
	good := `{"version": 1, "entries": []}`
	for _, c := range []struct{ name, content, says string }{
		{"truncated", good[:12], "empty or cut short"},
		{"allow list state", `{"version":1,"entries":[{"path":"/usr/bin/x","resolutions":[]}]}`, `unknown field`},
		{"huge", "", "larger than"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "my-learned.json")
			if err := os.WriteFile(file, []byte(c.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if c.name == "huge" {
				os.Truncate(file, 64<<20)
			}
			secret := secretFile(t)
			d := startDaemon(t, "--config.file="+learnConfig(t, dir, secret, "secret"), "--learn.state-file="+file)
			d.waitLog(t, 1, "learned set unreadable, kept as "+file+".bad", file, c.says)
			st, err := os.Stat(file + ".bad")
			if err != nil || (c.name == "huge" && st.Size() != 64<<20) || (c.name != "huge" && readFile(t, file+".bad") != c.content) {
				t.Fatalf("the bad file is not kept as it was: %v %v", st, err)
			}
			// And the daemon learns afresh, into a good file.
			runCmd(t, "head", secret)
			d.event(t, "learned head", learnedEvent(secret, "/usr/bin/head"))
			d.signal(t, syscall.SIGTERM)
			if err := d.wait(t); err != nil {
				t.Fatal(err)
			}
			if b := readFile(t, file); !strings.Contains(b, `"executable": "/usr/bin/head"`) {
				t.Fatalf("new learned set:\n%s", b)
			}
		})
	}
}

// TestDefaultReportsTheFileSystemsNames: on a merged-/usr system the
// default's /bin filter reports /usr/bin/..., the name a search finds.
func TestDefaultReportsTheFileSystemsNames(t *testing.T) {
	if l, err := os.Readlink("/bin"); err != nil || strings.TrimPrefix(l, "/") != "usr/bin" {
		t.Skip("/bin is not a link to /usr/bin here")
	}
	d := startDaemon(t)
	name := fmt.Sprintf("fsmon-e2e-%d", os.Getpid())
	t.Cleanup(func() { os.Remove("/usr/bin/" + name) })
	if out, err := runCmd(t, "sh", "-c", "echo x > /bin/"+name); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	ev := d.event(t, "the change", func(m map[string]any) bool {
		p, _ := m["file.path"].(string)
		return m["event"] == "change" && strings.HasSuffix(p, "/"+name)
	})
	if ev["file.path"] != "/usr/bin/"+name {
		t.Fatalf("reported at %v (filter %v), want /usr/bin/%s", ev["file.path"], ev["filter"], name)
	}
}
