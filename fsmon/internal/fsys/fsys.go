// Package fsys holds the file system calls the engine makes on paths and
// descriptors of its own: resolving a path confined to a root
// (openat2 RESOLVE_IN_ROOT), a descriptor's mount id (statx) and path
// (/proc/self/fd), and comparing directories. Those on the permission
// path allocate nothing.
package fsys

import (
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/proc"
)

// OpenInRoot opens p (absolute, as the root's processes see it) below
// the directory rootFD, confined to it: symlinks, ".." and magic links
// cannot lead out of it, whatever the tree below holds. The result is an
// O_PATH descriptor unless flags ask otherwise; it is close-on-exec.
func OpenInRoot(rootFD int, p string, flags, resolve uint64) (int, error) {
	how := unix.OpenHow{Flags: flags | unix.O_PATH | unix.O_CLOEXEC, Resolve: resolve | unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	rel := strings.TrimPrefix(p, "/")
	if rel == "" {
		rel = "."
	}
	for {
		fd, err := unix.Openat2(rootFD, rel, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

// MountID is the id of the mount fd's object is on (statx STATX_MNT_ID),
// 0 when it cannot be had. A raw syscall with a static empty path: x/sys
// would copy the path to the heap, and the permission path calls this
// for new files.
func MountID(fd int) uint64 {
	var sx unix.Statx_t
	_, _, errno := unix.RawSyscall6(unix.SYS_STATX, uintptr(fd), uintptr(unsafe.Pointer(&emptyPath[0])),
		unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, uintptr(unsafe.Pointer(&sx)), 0)
	if errno != 0 {
		return 0
	}
	return sx.Mnt_id
}

var emptyPath = [1]byte{0}

// FDPath reads the path of fd as the daemon's mount namespace sees it
// into buf and returns its length; it allocates nothing.
func FDPath(fd int, buf []byte) (int, error) {
	var pb [40]byte
	p := append(pb[:0], "/proc/self/fd/"...)
	p = strconv.AppendInt(p, int64(fd), 10)
	return proc.Readlink(p, buf)
}

// Path is FDPath as a string, "" when it cannot be read; for paths that
// are kept (tables), not for the permission path.
func Path(fd int) string {
	var buf [unix.PathMax]byte
	n, err := FDPath(fd, buf[:])
	if err != nil {
		return ""
	}
	return string(buf[:n])
}

// SameFile reports whether two descriptors refer to the same inode.
func SameFile(a, b int) bool {
	var sa, sb unix.Stat_t
	return unix.Fstat(a, &sa) == nil && unix.Fstat(b, &sb) == nil && sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// FileID identifies an inode: (st_dev, st_ino), what a permission
// event's fd is looked up by with one fstat.
type FileID struct {
	Dev, Ino uint64
}
