package fsys

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Handle is a file handle (name_to_handle_at(2)) as a comparable value:
// on ext4, xfs and btrfs it holds the inode number and its generation,
// so unlike (device, inode) it never names a later file that got a
// freed inode number (ext4 gives one out again at once).
type Handle struct {
	Type  int32
	Bytes string
}

// IsZero reports an empty handle (none could be had).
func (h Handle) IsZero() bool { return h.Bytes == "" && h.Type == 0 }

// HandleOf is the handle of the file fd is open on.
func HandleOf(fd int) (Handle, error) {
	return handleAt(fd, "", unix.AT_EMPTY_PATH)
}

// HandleAt is the handle of the file path names, following a final
// symlink, magic links (/proc/PID/exe) included.
func HandleAt(path string) (Handle, error) {
	return handleAt(unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
}

func handleAt(dirfd int, path string, flags int) (Handle, error) {
	h, _, err := unix.NameToHandleAt(dirfd, path, flags)
	if err != nil {
		return Handle{}, err
	}
	return Handle{Type: h.Type(), Bytes: string(h.Bytes())}, nil
}

// Gone reports whether the file h names no longer exists (ESTALE from
// open_by_handle_at(2)); mountFD is any descriptor on its file system.
// Any other error (not supported, no privilege, another file system)
// says nothing, and is no.
func (h Handle) Gone(mountFD int) bool {
	fd, err := unix.OpenByHandleAt(mountFD, unix.NewFileHandle(h.Type, []byte(h.Bytes)), unix.O_PATH|unix.O_CLOEXEC)
	if err == nil {
		unix.Close(fd)
		return false
	}
	return errors.Is(err, unix.ESTALE)
}
