// Package ocihook lets the daemon take part in a container's start: an
// OCI runtime hook (createRuntime, or prestart) run by the runtime on
// the host before the container's first program runs hands the
// container's state to the daemon over a unix socket and waits until
// the daemon has placed the container's marks. Runtimes that read hook
// directories (podman, CRI-O: containers-hooks.d) run it for every
// container.
//
// The socket trusts its peer only when it is root in the host's mount
// namespace (SO_PEERCRED, and /proc/PID/ns/mnt of the peer): a
// container's root, even with the socket bind-mounted in, is in
// another mount namespace and is refused.
package ocihook

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// State is the part of the OCI state a runtime gives its hooks on stdin
// that the daemon needs.
type State struct {
	ID     string `json:"id"`
	PID    int32  `json:"pid"`
	Bundle string `json:"bundle"`
}

// maxState bounds a state read from stdin or from the socket.
const maxState = 1 << 20

// ParseState reads a runtime's state.
func ParseState(b []byte) (State, error) {
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("hook state: %w", err)
	}
	if s.ID == "" || s.PID <= 0 || s.Bundle == "" || strings.ContainsAny(s.ID, "/\x00") {
		return State{}, fmt.Errorf("hook state: want id, pid and bundle, got %q, %d, %q", s.ID, s.PID, s.Bundle)
	}
	return s, nil
}

// Run is the hook: it reads the state from stdin, sends it to the
// daemon at socket and waits for its answer, at most wait. A daemon that
// does not listen lets the container start (the daemon's scan finds it
// later: a stopped daemon must not stop every container of the
// machine); one that answers an error fails the start.
func Run(stdin io.Reader, stderr io.Writer, socket string, wait time.Duration) int {
	b, err := io.ReadAll(io.LimitReader(stdin, maxState))
	if err != nil {
		fmt.Fprintln(stderr, "fsmon_exporter hook:", err)
		return 1
	}
	if _, err := ParseState(b); err != nil {
		fmt.Fprintln(stderr, "fsmon_exporter hook:", err)
		return 1
	}
	c, err := net.DialTimeout("unix", socket, wait)
	if err != nil {
		fmt.Fprintf(stderr, "fsmon_exporter hook: the daemon does not listen at %s (%v): the container starts unprotected until the daemon's scan finds it\n", socket, err)
		return 0
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(append(compact(b), '\n')); err != nil {
		fmt.Fprintln(stderr, "fsmon_exporter hook: sending the state:", err)
		return 1
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Fprintln(stderr, "fsmon_exporter hook: no answer from the daemon:", err)
		return 1
	}
	if line = strings.TrimSpace(line); line != "ok" {
		fmt.Fprintln(stderr, "fsmon_exporter hook: the daemon says:", line)
		return 1
	}
	return 0
}

// compact puts a JSON document (checked by ParseState) on one line.
func compact(b []byte) []byte {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return bytes.ReplaceAll(b, []byte("\n"), []byte(" "))
	}
	return buf.Bytes()
}

// A Starter places the marks of a container that is starting, and
// returns once they are in place.
type Starter interface {
	StartContainer(ctx context.Context, s State) error
}

// Listen makes the socket at path (its directory too, 0700), replacing
// a stale one.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("hook socket: %w", err)
	}
	if st, err := os.Lstat(path); err == nil && st.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("hook socket: %w", err)
	}
	os.Chmod(path, 0o600)
	return ln, nil
}

// Serve answers hooks on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener, procRoot string, s Starter, log *slog.Logger) {
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("hook socket: accept", "err", err)
			}
			return
		}
		go serveOne(ctx, c.(*net.UnixConn), procRoot, s, log)
	}
}

func serveOne(ctx context.Context, c *net.UnixConn, procRoot string, s Starter, log *slog.Logger) {
	defer c.Close()
	answer := func(msg string) { c.Write([]byte(msg + "\n")) }
	// Read first (bounded), so that the peer gets the answer, refusal
	// too, rather than a broken pipe.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(io.LimitReader(c, maxState)).ReadBytes('\n')
	if err != nil {
		answer("error: reading the state: " + err.Error())
		return
	}
	if err := trusted(c, procRoot); err != nil {
		log.Warn("hook socket: peer refused", "err", err)
		answer("error: " + err.Error())
		return
	}
	st, err := ParseState(line)
	if err != nil {
		answer("error: " + err.Error())
		return
	}
	if err := s.StartContainer(ctx, st); err != nil {
		log.Warn("hook: the container's marks could not be placed", "id", st.ID, "err", err)
		answer("error: " + err.Error())
		return
	}
	answer("ok")
}

// ErrUntrusted says the peer of the socket may not tell the daemon of
// containers.
var ErrUntrusted = errors.New("hook peer is not root in the host's mount namespace")

// trusted checks the peer: uid 0, in the daemon's mount namespace.
func trusted(c *net.UnixConn, procRoot string) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cerr != nil {
		return cerr
	}
	if cred.Uid != 0 {
		return fmt.Errorf("%w: uid %d", ErrUntrusted, cred.Uid)
	}
	theirs, err1 := os.Readlink(fmt.Sprintf("%s/%d/ns/mnt", procRoot, cred.Pid))
	ours, err2 := os.Readlink(procRoot + "/self/ns/mnt")
	if err1 != nil || err2 != nil || theirs != ours {
		return fmt.Errorf("%w: pid %d in %s", ErrUntrusted, cred.Pid, theirs)
	}
	return nil
}
