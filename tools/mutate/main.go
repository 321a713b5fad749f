// Command mutate checks that the tests catch wrong code. It applies a
// fixed list of small wrong changes (mutations) to the product code, one
// at a time, runs the tests each one names, and reports the mutations
// that no test caught ("survived"). A suite that lets one survive has a
// hole: `make mutate` fails.
//
// No suitable mutation tool is served to this project, and a generic one
// would mostly mutate code no attacker cares about; the list names the
// decisions, answers, caches, marks, container look-ups, cardinality caps
// and drop counters that the product's promises rest on.
//
// Every mutation runs in a copy of the work tree (tracked and untracked
// files, not ignored ones), so an interrupted run never leaves a wrong
// change behind. Before any mutation, each distinct test command is run
// once on the unchanged copy: a test that fails anyway proves nothing.
//
// The list is a set of text files (tools/mutate/mutations/*.txt), one
// block per mutation:
//
//	## name: severity order of kinds swapped
//	## file: fsmon/policy/compile.go
//	## run: ./fsmon/engine/ -run '^TestTwoFiltersOnOneFile$'
//	<<<<<<<
//		if a.severity > b.severity {
//	=======
//		if a.severity < b.severity {
//	>>>>>>>
//
// The text between <<<<<<< and ======= must occur exactly once in the
// file. `run` is what follows `go test -count=1`, read by the shell.
// Three optional keys serve the test modules of their own (deploy/test):
// `## dir: deploy/test` runs go test in that directory of the copy,
// `## make: deb` makes those targets in the copy first (what the tests
// test is built from the mutated tree), and `## env: K=V ...` sets
// variables for go test (read by the shell, relative to dir).
// Lines starting with # outside a block are comments.
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Mutation is one wrong change and the tests that must catch it.
type Mutation struct {
	Name string
	File string
	Run  string
	// Dir, Make and Env: see the package comment.
	Dir, Make, Env string
	From           string
	To             string
	// Where is the list file and line the block starts at, for errors.
	Where string
}

// Verdict is what became of one mutation.
type Verdict string

const (
	Killed   Verdict = "killed"   // a test failed: the suite caught it
	Survived Verdict = "survived" // every test passed: a hole
	Invalid  Verdict = "invalid"  // the mutation cannot be applied as written
)

func main() {
	listGlob := flag.String("list", "tools/mutate/mutations/*.txt", "mutation list files (glob)")
	only := flag.String("only", "", "run only mutations whose name matches this regular expression")
	timeout := flag.Duration("timeout", 5*time.Minute, "time limit of one test run")
	verbose := flag.Bool("v", false, "print the output of every test run")
	check := flag.Bool("check", false, "only check that every mutation applies (its text occurs once in its file), run nothing")
	flag.Parse()

	files, err := filepath.Glob(*listGlob)
	if err != nil || len(files) == 0 {
		fatalf("no mutation lists match %s (%v)", *listGlob, err)
	}
	sort.Strings(files)
	var muts []Mutation
	for _, f := range files {
		m, err := parseFile(f)
		if err != nil {
			fatalf("%v", err)
		}
		muts = append(muts, m...)
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			fatalf("-only: %v", err)
		}
		var keep []Mutation
		for _, m := range muts {
			if re.MatchString(m.Name) {
				keep = append(keep, m)
			}
		}
		muts = keep
	}
	if len(muts) == 0 {
		fatalf("no mutations to run")
	}

	if *check {
		os.Exit(checkAll(muts))
	}

	ctx, stop := signalContext()
	defer stop()
	r, err := newRunner(*timeout, *verbose)
	if err != nil {
		fatalf("%v", err)
	}
	defer r.cleanup()

	// Baselines: each distinct test command must pass on the unchanged tree.
	seen := map[string]bool{}
	for _, m := range muts {
		key := m.Dir + "\x00" + m.Make + "\x00" + m.Env + "\x00" + m.Run
		if seen[key] {
			continue
		}
		seen[key] = true
		fmt.Printf("baseline: %s\n", m.command())
		out, err := r.test(ctx, m)
		if err != nil {
			fatalf("the unchanged tree fails `%s`, so no mutation can be judged by it: %v\n%s", m.command(), err, tail(out, 40))
		}
		if !ranTests(out) {
			fatalf("`%s` runs no test (a test renamed or moved?), so it can catch nothing:\n%s", m.command(), tail(out, 10))
		}
	}

	counts := map[Verdict]int{}
	var bad []string
	for i, m := range muts {
		if ctx.Err() != nil {
			fatalf("interrupted")
		}
		start := time.Now()
		v, detail := r.try(ctx, m)
		counts[v]++
		fmt.Printf("[%d/%d] %-8s %s (%s, %.0fs)%s\n", i+1, len(muts), v, m.Name, m.File, time.Since(start).Seconds(), detail)
		if v != Killed {
			bad = append(bad, fmt.Sprintf("%s: %s %q", m.Where, v, m.Name))
		}
	}
	fmt.Printf("%d mutations: %d killed, %d survived, %d invalid\n", len(muts), counts[Killed], counts[Survived], counts[Invalid])
	if len(bad) > 0 {
		for _, b := range bad {
			fmt.Println("  " + b)
		}
		os.Exit(1)
	}
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "mutate: "+format+"\n", args...)
	os.Exit(2)
}

func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// checkAll reports the mutations that cannot be applied to the work tree
// as it is, so that code moved or rewritten cannot leave a list that
// quietly tests nothing: `make test` runs it.
func checkAll(muts []Mutation) int {
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		fatalf("not in a git work tree: %v", err)
	}
	root := strings.TrimSpace(string(top))
	bad := 0
	for _, m := range muts {
		data, err := os.ReadFile(filepath.Join(root, m.File))
		if err != nil {
			fmt.Printf("%s: %q: %v\n", m.Where, m.Name, err)
			bad++
			continue
		}
		if n := strings.Count(string(data), m.From); n != 1 {
			fmt.Printf("%s: %q: its text occurs %d times in %s, want once\n", m.Where, m.Name, n, m.File)
			bad++
		}
	}
	if bad > 0 {
		fmt.Printf("%d of %d mutations do not apply: update tools/mutate/mutations\n", bad, len(muts))
		return 1
	}
	fmt.Printf("%d mutations apply\n", len(muts))
	return 0
}

// parseFile reads one list file.
func parseFile(path string) ([]Mutation, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var (
		muts []Mutation
		cur  Mutation
		buf  []string
		// state: 0 header, 1 from, 2 to
		state int
	)
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		where := fmt.Sprintf("%s:%d", path, n)
		switch state {
		case 0:
			switch {
			case strings.HasPrefix(line, "## "):
				k, v, ok := strings.Cut(strings.TrimPrefix(line, "## "), ":")
				if !ok {
					return nil, fmt.Errorf("%s: want \"## key: value\"", where)
				}
				v = strings.TrimSpace(v)
				switch strings.TrimSpace(k) {
				case "name":
					if cur.Name != "" {
						return nil, fmt.Errorf("%s: mutation %q has no <<<<<<< block", where, cur.Name)
					}
					cur = Mutation{Name: v, Where: where}
				case "file":
					cur.File = v
				case "run":
					cur.Run = v
				case "dir":
					cur.Dir = v
				case "make":
					cur.Make = v
				case "env":
					cur.Env = v
				default:
					return nil, fmt.Errorf("%s: unknown key %q (name, file, run, dir, make, env)", where, k)
				}
			case line == "<<<<<<<":
				if cur.Name == "" || cur.File == "" || cur.Run == "" {
					return nil, fmt.Errorf("%s: a block needs ## name, ## file and ## run before it", where)
				}
				state, buf = 1, nil
			case strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#"):
			default:
				return nil, fmt.Errorf("%s: unexpected line outside a block: %q", where, line)
			}
		case 1:
			if line == "=======" {
				cur.From, state, buf = strings.Join(buf, "\n"), 2, nil
				continue
			}
			buf = append(buf, line)
		case 2:
			if line == ">>>>>>>" {
				cur.To = strings.Join(buf, "\n")
				if cur.From == cur.To {
					return nil, fmt.Errorf("%s: mutation %q changes nothing", cur.Where, cur.Name)
				}
				muts = append(muts, cur)
				cur, state = Mutation{}, 0
				continue
			}
			buf = append(buf, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if state != 0 || cur.Name != "" {
		return nil, fmt.Errorf("%s: the last block is not closed with >>>>>>>", path)
	}
	return muts, nil
}

// runner holds the copy of the tree the mutations are applied to.
type runner struct {
	src, dir string
	timeout  time.Duration
	verbose  bool
}

func newRunner(timeout time.Duration, verbose bool) (*runner, error) {
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		return nil, fmt.Errorf("not in a git work tree: %w", err)
	}
	src := strings.TrimSpace(string(top))
	dir, err := os.MkdirTemp("", "fsmon-mutate-")
	if err != nil {
		return nil, err
	}
	r := &runner{src: src, dir: dir, timeout: timeout, verbose: verbose}
	list, err := exec.Command("git", "-C", src, "ls-files", "-z", "-co", "--exclude-standard").Output()
	if err != nil {
		r.cleanup()
		return nil, fmt.Errorf("git ls-files: %w", err)
	}
	for _, rel := range strings.Split(strings.TrimRight(string(list), "\x00"), "\x00") {
		if err := copyFile(filepath.Join(src, rel), filepath.Join(dir, rel)); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted in the work tree, not yet in the index
			}
			r.cleanup()
			return nil, err
		}
	}
	return r, nil
}

func (r *runner) cleanup() { os.RemoveAll(r.dir) }

func copyFile(from, to string) error {
	fi, err := os.Lstat(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(from)
		if err != nil {
			return err
		}
		return os.Symlink(target, to)
	}
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// try applies m, runs its tests and puts the file back.
func (r *runner) try(ctx context.Context, m Mutation) (Verdict, string) {
	path := filepath.Join(r.dir, m.File)
	orig, err := os.ReadFile(path)
	if err != nil {
		return Invalid, ": " + err.Error()
	}
	if n := strings.Count(string(orig), m.From); n != 1 {
		return Invalid, fmt.Sprintf(": the text to replace occurs %d times in %s, want once", n, m.File)
	}
	mutated := strings.Replace(string(orig), m.From, m.To, 1)
	if err := os.WriteFile(path, []byte(mutated), 0o644); err != nil {
		return Invalid, ": " + err.Error()
	}
	defer os.WriteFile(path, orig, 0o644)
	out, err := r.test(ctx, m)
	if err == nil {
		if r.verbose {
			fmt.Println(tail(out, 20))
		}
		return Survived, ""
	}
	if bytes.Contains(out, []byte("[build failed]")) || bytes.Contains(out, []byte("build failed:")) || bytes.HasPrefix(out, []byte(buildMarker)) {
		// A mutation that does not compile proves nothing about the tests.
		return Invalid, ": it does not compile\n" + tail(out, 10)
	}
	if r.verbose {
		fmt.Println(tail(out, 20))
	}
	return Killed, ": " + firstFailure(out)
}

// command is the test command of m, as the reports show it.
func (m Mutation) command() string {
	c := "go test -count=1 " + m.Run
	if m.Env != "" {
		c = m.Env + " " + c
	}
	if m.Make != "" {
		c = "make " + m.Make + " && " + c
	}
	if m.Dir != "" {
		c = "(in " + m.Dir + ") " + c
	}
	return c
}

// test builds the daemon in the copy (end-to-end tests start it through
// FSMON_BINARY), makes m's targets, and runs go test with m's arguments
// in m's directory.
func (r *runner) test(ctx context.Context, m Mutation) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	bin := filepath.Join(r.dir, "fsmon_exporter")
	script := fmt.Sprintf("go build -o %s . 2>/dev/null || { echo '%s'; go build -o %s .; exit 1; }; ",
		bin, buildMarker, bin)
	if m.Make != "" {
		script += fmt.Sprintf("make -s --no-print-directory %s || { echo '%s'; exit 1; }; ", m.Make, buildMarker)
	}
	if m.Dir != "" {
		script += fmt.Sprintf("cd %s || exit 1; ", m.Dir)
	}
	script += fmt.Sprintf("exec env %s go test -count=1 -timeout %s %s", m.Env, r.timeout-10*time.Second, m.Run)
	c := exec.CommandContext(ctx, "bash", "-c", script)
	c.Dir = r.dir
	// CI=true: a test that would skip (its program or feature missing)
	// fails instead, so that a baseline cannot pass by testing nothing.
	c.Env = append(os.Environ(), "FSMON_BINARY="+bin, "CI=true")
	// Its own process group, so that a hung test's children go with it.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	out, err := c.CombinedOutput()
	if ctx.Err() != nil && err != nil {
		return out, fmt.Errorf("timed out after %s: %w", r.timeout, err)
	}
	return out, err
}

// ranTests reports whether a passing go test run ran a test in at least
// one package: "ok <pkg> <time>" without "[no tests to run]".
func ranTests(out []byte) bool {
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "ok ") && !strings.Contains(l, "[no tests to run]") && !strings.Contains(l, "[no test files]") {
			return true
		}
	}
	return false
}

// buildMarker starts the output of a run whose daemon did not build.
const buildMarker = "mutate: the daemon does not build"

var failLine = regexp.MustCompile(`(?m)^\s*--- FAIL: \S+`)

func firstFailure(out []byte) string {
	if m := failLine.Find(out); m != nil {
		return strings.TrimSpace(string(m))
	}
	if bytes.Contains(out, []byte("panic: test timed out")) {
		return "test timed out"
	}
	return "tests failed"
}

func tail(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
