package proc

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// An Image is a handle on the memory image a process runs, taken with
// OpenImage: /proc/PID/pagemap opened, which holds the process's mm (the
// kernel's address space object) without pinning its memory. An exec
// replaces a process's mm, and an exit drops it, so while the image is
// current the process still runs the program it ran when the image was
// taken, and the pid has not been reused. Checking costs one system call
// that takes no lock and touches no page.
type Image struct{ fd int32 }

// OpenImage takes pid's current image. Like /proc/PID/mem, it needs
// ptrace read access to pid (root has it, unless an LSM says no).
func (fs FS) OpenImage(pid int32) (Image, error) {
	var pb [64]byte
	p := append(fs.path(pb[:0], pid, "pagemap"), 0)
	fd, _, errno := unix.Syscall6(unix.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(&p[0])),
		unix.O_RDONLY|unix.O_CLOEXEC, 0, 0, 0)
	if errno != 0 {
		return Image{-1}, fmt.Errorf("opening /proc/%d/pagemap: %w", pid, errno)
	}
	return Image{int32(fd)}, nil
}

// Current reports whether the process still runs the image. pagemap's
// read takes a reference on the mm only if the mm is still in use
// (returning 0 bytes otherwise), then rejects a length that is not a
// multiple of 8 with EINVAL before it looks at any page: EINVAL means in
// use, 0 bytes means gone.
//
// One caveat, by the kernel's design: an mm is "in use" while any process
// uses it, and processes made with CLONE_VM but not CLONE_THREAD (a
// vfork child until it execs or exits) share their parent's. The caller
// must not rely on an image whose process shares its mm (SharesMM).
func (im Image) Current() bool {
	if im.fd < 0 {
		return false
	}
	var b [8]byte
	// Not raw: the read may drop the last reference to an mm whose
	// process exited meanwhile, and tear it down.
	_, _, errno := unix.Syscall6(unix.SYS_PREAD64, uintptr(im.fd), uintptr(unsafe.Pointer(&b[0])), 1, 0, 0, 0)
	return errno == unix.EINVAL
}

// Close releases the image.
func (im *Image) Close() {
	if im.fd >= 0 {
		unix.Close(int(im.fd))
		im.fd = -1
	}
}

// kcmpVM is KCMP_VM of linux/kcmp.h.
const kcmpVM = 1

// ErrNoKcmp says the kernel lacks kcmp(2) (CONFIG_KCMP).
var ErrNoKcmp = errors.New("kcmp(2) not available")

// SharesMM reports whether pids a and b use the same mm, as a vfork
// child and its parent do.
func SharesMM(a, b int32) (bool, error) {
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), kcmpVM, 0, 0, 0)
	switch errno {
	case 0:
		return r == 0, nil
	case unix.ENOSYS:
		return false, ErrNoKcmp
	default:
		return false, fmt.Errorf("kcmp(%d, %d, KCMP_VM): %w", a, b, errno)
	}
}

// A Pidfd refers to one process, never to a later one with its pid.
type Pidfd struct{ fd int32 }

// OpenPidfd opens a pidfd for pid.
func OpenPidfd(pid int32) (Pidfd, error) {
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		return Pidfd{-1}, fmt.Errorf("pidfd_open(%d): %w", pid, err)
	}
	return Pidfd{int32(fd)}, nil
}

// Info is what PIDFD_GET_INFO (Linux 6.13) tells of a live process.
type Info struct {
	PPID int32
	EUID int64
}

// ErrNoPidfdInfo says the kernel lacks PIDFD_GET_INFO.
var ErrNoPidfdInfo = errors.New("PIDFD_GET_INFO not available (Linux 6.13)")

// Info reads the process's parent and effective user without a /proc
// read: one ioctl. It fails with ESRCH once the process has exited.
func (p Pidfd) Info() (Info, error) {
	if p.fd < 0 {
		return Info{}, unix.EBADF
	}
	var in unix.PidfdInfo
	in.Mask = unix.PIDFD_INFO_PID | unix.PIDFD_INFO_CREDS
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(p.fd), unix.PIDFD_GET_INFO, uintptr(unsafe.Pointer(&in)))
	switch errno {
	case 0:
	case unix.ENOTTY, unix.EINVAL:
		return Info{}, ErrNoPidfdInfo
	default:
		return Info{}, errno
	}
	if in.Mask&(unix.PIDFD_INFO_PID|unix.PIDFD_INFO_CREDS) != unix.PIDFD_INFO_PID|unix.PIDFD_INFO_CREDS {
		return Info{}, ErrNoPidfdInfo
	}
	return Info{PPID: int32(in.Ppid), EUID: int64(in.Euid)}, nil
}

// Close releases the pidfd.
func (p *Pidfd) Close() {
	if p.fd >= 0 {
		unix.Close(int(p.fd))
		p.fd = -1
	}
}
