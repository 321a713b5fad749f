package proc

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxHandle is MAX_HANDLE_SZ, the largest file handle the kernel gives.
const maxHandle = 128

// Handle is a file handle (name_to_handle_at(2)) as a comparable value
// that costs no allocation: on ext4, xfs and btrfs it holds the inode
// number and its generation, so unlike (device, inode) it never names a
// later file that got a freed inode number (ext4 gives one out again at
// once).
type Handle struct {
	Type int32
	Len  uint8
	B    [maxHandle]byte
}

// IsZero reports an empty handle (none could be had).
func (h *Handle) IsZero() bool { return h.Len == 0 && h.Type == 0 }

// fileHandle is struct file_handle with room for the largest handle.
type fileHandle struct {
	bytes uint32
	typ   int32
	b     [maxHandle]byte
}

// HandleOf is the handle of the file fd is open on.
func HandleOf(fd int) (Handle, error) {
	var empty [1]byte
	return handleAt(uintptr(fd), empty[:], unix.AT_EMPTY_PATH)
}

// ExeHandle is the handle of pid's executable: /proc/PID/exe, followed.
func (fs FS) ExeHandle(pid int32) (Handle, error) {
	var pb [64]byte
	return handleAt(atFDCWD, append(fs.path(pb[:0], pid, "exe"), 0), unix.AT_SYMLINK_FOLLOW)
}

// handleAt calls name_to_handle_at; p ends with a NUL.
func handleAt(dirfd uintptr, p []byte, flags int) (Handle, error) {
	fh := fileHandle{bytes: maxHandle}
	var mnt int32
	_, _, errno := unix.Syscall6(unix.SYS_NAME_TO_HANDLE_AT, dirfd, uintptr(unsafe.Pointer(&p[0])),
		uintptr(unsafe.Pointer(&fh)), uintptr(unsafe.Pointer(&mnt)), uintptr(flags), 0)
	if errno != 0 {
		return Handle{}, errno
	}
	if fh.bytes > maxHandle {
		return Handle{}, unix.EOVERFLOW
	}
	h := Handle{Type: fh.typ, Len: uint8(fh.bytes), B: fh.b}
	clear(h.B[h.Len:])
	return h, nil
}

// Gone reports whether the file h names no longer exists (ESTALE from
// open_by_handle_at(2)); mountFD is any descriptor on its file system,
// not an O_PATH one (EBADF).
// Any other error (not supported, another file system) says nothing,
// and is no.
func (h *Handle) Gone(mountFD int) bool {
	fd, err := unix.OpenByHandleAt(mountFD, unix.NewFileHandle(h.Type, h.B[:h.Len]), unix.O_PATH|unix.O_CLOEXEC)
	if err == nil {
		unix.Close(fd)
		return false
	}
	return errors.Is(err, unix.ESTALE)
}
