package engine

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/testutil/stepper"
)

// contentEnv, set to a process name, makes the test binary a process
// that holds one descriptor and does to it what its stdin says
// (runContent), under that name (comm): the reader, writer and thief
// whose content events the engine judges.
const contentEnv = "FSMON_TEST_CONTENT"

// contentFDEnv is the descriptor a runContent process starts with, after
// an exec.
const contentFDEnv = "FSMON_TEST_CONTENT_FD"

// runContent answers each command with "ok" (and what it read) or the
// errno's name:
//
//	open PATH          O_RDWR, kept; prints "ok FD"
//	create PATH        O_CREAT|O_EXCL|O_RDWR, kept; prints "ok FD"
//	steal PID FD       pidfd_getfd(2) of another process's descriptor, kept
//	pread              4 bytes at 0; prints "ok DATA"
//	pwrite             "XXXX" at 0
//	mmap               4096 bytes, shared, read-only; prints "ok DATA"
//	ftruncate          to 0
//	truncate PATH      truncate(2) by path, to 0
//	write TEXT         at the current position
//	exec NAME          execve(2) of the test binary as a process called
//	                   NAME that keeps the descriptor (contentFDEnv)
func runContent(name string) int {
	b := append([]byte(name), 0)
	unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&b[0])), 0, 0, 0)
	fd := -1
	if n, err := strconv.Atoi(os.Getenv(contentFDEnv)); err == nil {
		fd = n
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) == 0 {
			continue
		}
		var err error
		out := ""
		switch f[0] {
		case "open", "create":
			flags := unix.O_RDWR | unix.O_CLOEXEC
			if f[0] == "create" {
				flags |= unix.O_CREAT | unix.O_EXCL
			}
			if fd, err = unix.Open(f[1], flags, 0o644); err == nil {
				out = strconv.Itoa(fd)
			}
		case "steal":
			pid, _ := strconv.Atoi(f[1])
			n, _ := strconv.Atoi(f[2])
			var pfd int
			if pfd, err = unix.PidfdOpen(pid, 0); err == nil {
				fd, err = unix.PidfdGetfd(pfd, n, 0)
				unix.Close(pfd)
			}
		case "pread":
			buf := make([]byte, 4)
			var m int
			if m, err = unix.Pread(fd, buf, 0); err == nil {
				out = string(buf[:m])
			}
		case "pwrite":
			_, err = unix.Pwrite(fd, []byte("XXXX"), 0)
		case "write":
			_, err = unix.Write(fd, []byte(f[1]))
		case "mmap":
			var m []byte
			if m, err = unix.Mmap(fd, 0, 4096, unix.PROT_READ, unix.MAP_SHARED); err == nil {
				out = strings.TrimRight(string(m[:8]), "\x00")
				unix.Munmap(m)
			}
		case "sendfile", "splice":
			// Into a pipe: the bytes would reach the caller without a
			// read(2) of its own.
			var p [2]int
			if err = unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
				break
			}
			off := int64(0)
			if f[0] == "sendfile" {
				_, err = unix.Sendfile(p[1], fd, &off, 4)
			} else {
				_, err = unix.Splice(fd, &off, p[1], nil, 4, 0)
			}
			unix.Close(p[0])
			unix.Close(p[1])
		case "copy":
			// copy_file_range into a file of the caller's own.
			var out int
			if out, err = unix.Open(f[1], unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600); err != nil {
				break
			}
			off := int64(0)
			_, err = unix.CopyFileRange(fd, &off, out, nil, 4, 0)
			unix.Close(out)
		case "ftruncate":
			err = unix.Ftruncate(fd, 0)
		case "truncate":
			err = unix.Truncate(f[1], 0)
		case "exec":
			var self string
			if self, err = os.Executable(); err != nil {
				break
			}
			if _, err = unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
				break
			}
			env := []string{contentEnv + "=" + f[1], contentFDEnv + "=" + strconv.Itoa(fd)}
			for _, kv := range os.Environ() {
				if !strings.HasPrefix(kv, contentEnv) {
					env = append(env, kv)
				}
			}
			err = unix.Exec(self, []string{self}, env)
		default:
			err = unix.EINVAL
		}
		if err != nil {
			var e unix.Errno
			errors.As(err, &e)
			fmt.Println(unix.ErrnoName(e))
			continue
		}
		fmt.Println(strings.TrimSpace("ok " + out))
	}
	return 0
}

// contentProc is a process of runContent.
type contentProc struct {
	*stepper.Stepper
}

// startContent starts a runContent process called name.
func startContent(t *testing.T, name string) contentProc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(contentEnv, name)
	s := stepper.Start(t, self)
	os.Unsetenv(contentEnv)
	s.Expect(t, "ready")
	return contentProc{s}
}

// do sends one command and returns the answer, which comes only after
// every permission event the call raised has been answered.
func (c contentProc) do(t *testing.T, cmd string) string {
	t.Helper()
	c.Send(t, cmd)
	return c.Line(t)
}

// must sends cmd and fails unless the answer is want.
func (c contentProc) must(t *testing.T, cmd, want string) {
	t.Helper()
	if got := c.do(t, cmd); got != want {
		t.Fatalf("%s: %q, want %q", cmd, got, want)
	}
}
