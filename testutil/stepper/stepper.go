// Package stepper drives a child process line by line, for tests that
// must know how far a real process got without waiting for time: the
// test writes to its stdin and reads what it prints (stdout and stderr).
// A line printed by a program proves its exec has returned, hence been
// counted by the exec counter (sched_process_exec runs inside execve);
// the return of exec.Cmd.Start does not: it comes when the exec closes
// the close-on-exec pipe of os/exec, before the tracepoint.
package stepper

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Stepper is one child process.
type Stepper struct {
	Cmd  *exec.Cmd
	in   *os.File
	out  *os.File
	r    *bufio.Reader
	seen strings.Builder
}

// Start starts name with args; the child is killed when the test ends.
func Start(t testing.TB, name string, args ...string) *Stepper {
	t.Helper()
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &Stepper{Cmd: exec.Command(name, args...), in: inW, out: outR, r: bufio.NewReader(outR)}
	s.Cmd.Stdin, s.Cmd.Stdout, s.Cmd.Stderr = inR, outW, outW
	if err := s.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	outW.Close()
	t.Cleanup(func() {
		s.Cmd.Process.Kill()
		s.Cmd.Wait()
		inW.Close()
		outR.Close()
	})
	return s
}

// Shell starts sh running script.
func Shell(t testing.TB, script string) *Stepper {
	t.Helper()
	return Start(t, "sh", "-c", script)
}

// PID is the child's pid.
func (s *Stepper) PID() int32 { return int32(s.Cmd.Process.Pid) }

// Send writes a line to the child's stdin.
func (s *Stepper) Send(t testing.TB, line string) {
	t.Helper()
	if _, err := s.in.WriteString(line + "\n"); err != nil {
		t.Fatalf("writing to pid %d: %v", s.PID(), err)
	}
}

// Expect reads what the child prints until a line equal to want.
func (s *Stepper) Expect(t testing.TB, want string) {
	t.Helper()
	s.out.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		line, err := s.r.ReadString('\n')
		s.seen.WriteString(line)
		if strings.TrimSuffix(line, "\n") == want {
			return
		}
		if err != nil {
			t.Fatalf("pid %d did not print %q: %v; it printed: %s", s.PID(), want, err, s.seen.String())
		}
	}
}

// Line reads the next line the child prints, without its newline.
func (s *Stepper) Line(t testing.TB) string {
	t.Helper()
	s.out.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := s.r.ReadString('\n')
	s.seen.WriteString(line)
	if err != nil {
		t.Fatalf("pid %d printed no line: %v; it printed: %s", s.PID(), err, s.seen.String())
	}
	return strings.TrimSuffix(line, "\n")
}

// Finish closes the child's stdin, reads the rest of what it prints and
// waits for it: all it printed, and how it ended.
func (s *Stepper) Finish(t testing.TB) (string, error) {
	t.Helper()
	s.in.Close()
	s.out.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(&s.seen, s.r); err != nil {
		t.Fatalf("pid %d did not end: %v; it printed: %s", s.PID(), err, s.seen.String())
	}
	err := s.Cmd.Wait()
	return s.seen.String(), err
}
