// Package proc reads the facts of a process that events report and allow
// lists match: /proc/PID/stat, exe, cmdline and status. The root is a
// parameter so tests can read fixtures; reading is apart from parsing.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrParse says a /proc file did not have the expected shape.
var ErrParse = errors.New("proc: unexpected file contents")

// FS reads /proc below Root.
type FS struct {
	Root string // normally /proc
}

func (fs FS) path(buf []byte, pid int32, file string) []byte {
	buf = append(buf[:0], fs.Root...)
	buf = append(buf, '/')
	buf = strconv.AppendInt(buf, int64(pid), 10)
	buf = append(buf, '/')
	buf = append(buf, file...)
	return buf
}

// readSmall reads a small /proc file into buf without the allocations of
// os.ReadFile.
func readSmall(p []byte, buf []byte) ([]byte, error) {
	fd, err := openNoAlloc(p)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return buf[:n], nil
}

// StatView holds the fields of /proc/PID/stat that are used. Comm
// refers into the caller's buffer: reading allocates nothing.
type StatView struct {
	Comm      []byte // the process name, cut by the kernel at 15 bytes
	PPID      int32
	StartTime uint64 // clock ticks after boot: with the pid, the process's identity
	Flags     uint64 // the kernel's PF_* flags of the task
}

// PFExiting is PF_EXITING of linux/sched.h: the task has begun to exit.
const PFExiting = 0x4

// ReadStat reads /proc/PID/stat into buf and parses it without
// allocating: the permission path calls it for every decision that
// needs the process name.
func (fs FS) ReadStat(pid int32, buf []byte) (StatView, error) {
	var pb [64]byte
	b, err := readSmall(fs.path(pb[:0], pid, "stat"), buf)
	if err != nil {
		return StatView{}, err
	}
	return ParseStatView(b)
}

// ParseStatView parses /proc/PID/stat contents into a view of them.
func ParseStatView(b []byte) (StatView, error) {
	l := bytes.IndexByte(b, '(')
	r := bytes.LastIndexByte(b, ')')
	if l < 0 || r < l {
		return StatView{}, fmt.Errorf("%w: stat without (comm)", ErrParse)
	}
	v := StatView{Comm: b[l+1 : r]}
	// Fields after comm, numbered as in proc(5): 3 state, 4 ppid, ...
	// 22 starttime.
	field := 2
	var ppid, start, flags uint64
	okPPID, okStart := false, false
	for i := r + 1; i < len(b); {
		for i < len(b) && b[i] == ' ' {
			i++
		}
		if i >= len(b) {
			break
		}
		field++
		j := i
		var n uint64
		num := true
		for j < len(b) && b[j] != ' ' && b[j] != '\n' {
			if b[j] < '0' || b[j] > '9' {
				num = false
			}
			n = n*10 + uint64(b[j]-'0')
			j++
		}
		switch field {
		case 4:
			ppid, okPPID = n, num
		case 9:
			if num {
				flags = n
			}
		case 22:
			start, okStart = n, num
		}
		if field == 22 || j >= len(b) || b[j] == '\n' {
			break
		}
		i = j
	}
	if !okPPID || !okStart {
		return StatView{}, fmt.Errorf("%w: stat lacks ppid or starttime", ErrParse)
	}
	v.PPID, v.StartTime, v.Flags = int32(ppid), start, flags
	return v, nil
}

// ReadExe reads /proc/PID/exe into buf without allocating.
func (fs FS) ReadExe(pid int32, buf []byte) ([]byte, error) {
	var pb [64]byte
	n, err := readlinkNoAlloc(fs.path(pb[:0], pid, "exe"), buf)
	if err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf[:n], []byte(" (deleted)")), nil
}

// atFDCWD is AT_FDCWD (-100) as the syscall takes it.
var atFDCWD = func() uintptr { v := unix.AT_FDCWD; return uintptr(v) }()

// openNoAlloc and readlinkNoAlloc take the path as bytes: x/sys/unix
// copies a string path to the heap on every call, and these run for
// every permission decision. p must have room for a NUL after it.
func openNoAlloc(p []byte) (int, error) {
	p = append(p, 0)
	for {
		fd, _, errno := unix.Syscall6(unix.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(&p[0])),
			uintptr(unix.O_RDONLY|unix.O_CLOEXEC), 0, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return -1, errno
		}
		return int(fd), nil
	}
}

// StatExe stats /proc/PID/exe, which follows the link to the executable
// itself: its device and inode say which file runs, whatever the path
// text says in the process's own mount namespace (which it may have
// arranged with bind mounts).
func (fs FS) StatExe(pid int32, st *unix.Stat_t) error {
	var pb [64]byte
	p := append(fs.path(pb[:0], pid, "exe"), 0)
	// Raw: resolving /proc/PID/exe takes no sleeping lock, and the
	// runtime's syscall bookkeeping is a measurable share of a decision.
	_, _, errno := unix.RawSyscall6(unix.SYS_NEWFSTATAT, atFDCWD, uintptr(unsafe.Pointer(&p[0])), uintptr(unsafe.Pointer(st)), 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// Readlink reads the symlink at path p (bytes, with room for a NUL)
// into buf without allocating.
func Readlink(p []byte, buf []byte) (int, error) { return readlinkNoAlloc(p, buf) }

func readlinkNoAlloc(p []byte, buf []byte) (int, error) {
	p = append(p, 0)
	n, _, errno := unix.Syscall6(unix.SYS_READLINKAT, atFDCWD, uintptr(unsafe.Pointer(&p[0])),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// Cmdline reads /proc/PID/cmdline, arguments joined by spaces.
func (fs FS) Cmdline(pid int32) (string, error) {
	var pb [64]byte
	var buf [4096]byte
	b, err := readSmall(fs.path(pb[:0], pid, "cmdline"), buf[:])
	if err != nil {
		return "", fmt.Errorf("reading cmdline of pid %d: %w", pid, err)
	}
	return ParseCmdline(b), nil
}

// ParseCmdline turns NUL-separated arguments into one line.
func ParseCmdline(b []byte) string {
	b = bytes.TrimRight(b, "\x00")
	out := make([]byte, len(b))
	for i, c := range b {
		if c == 0 {
			c = ' '
		}
		out[i] = c
	}
	return string(out)
}

// EUID reads the effective user id from /proc/PID/status.
func (fs FS) EUID(pid int32) (int64, error) {
	var pb [64]byte
	var buf [4096]byte
	b, err := readSmall(fs.path(pb[:0], pid, "status"), buf[:])
	if err != nil {
		return -1, fmt.Errorf("reading status of pid %d: %w", pid, err)
	}
	return ParseEUID(b)
}

// ParseEUID finds the effective uid in the contents of /proc/PID/status
// ("Uid:\treal\teffective\tsaved\tfs").
func ParseEUID(b []byte) (int64, error) {
	i := bytes.Index(b, []byte("\nUid:"))
	if i < 0 {
		return -1, fmt.Errorf("%w: status without Uid", ErrParse)
	}
	line := b[i+5:]
	if j := bytes.IndexByte(line, '\n'); j >= 0 {
		line = line[:j]
	}
	f := bytes.Fields(line)
	if len(f) < 2 {
		return -1, fmt.Errorf("%w: Uid line %q", ErrParse, line)
	}
	return strconv.ParseInt(string(f[1]), 10, 64)
}

// View views b as a string without copying, for look-ups on the
// permission path; the caller must not keep it past b's next change.
func View(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
