package proc

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

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
