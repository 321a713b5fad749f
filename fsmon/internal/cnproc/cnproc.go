// Package cnproc is a thin, typed layer over the kernel's process events
// connector (NETLINK_CONNECTOR, group CN_IDX_PROC; see
// include/uapi/linux/cn_proc.h): a message for every fork, exec, exit and
// name change of every process on the machine, queued on the listener's
// socket by the process itself, inside the system call, before that
// returns. It knows nothing of policy.
package cnproc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// What is the kind of a process event (PROC_EVENT_*).
type What uint32

const (
	None     What = 0x00000000 // an acknowledgement of a listen request
	Fork     What = 0x00000001
	Exec     What = 0x00000002
	UID      What = 0x00000004
	GID      What = 0x00000040
	SID      What = 0x00000080
	Ptrace   What = 0x00000100
	Comm     What = 0x00000200
	Coredump What = 0x40000000
	Exit     What = 0x80000000
)

// Event is one process event. PID and TGID name the process it is about:
// for a fork, the child.
type Event struct {
	What What
	// CPU and Seq: the kernel numbers the events it sends on each CPU
	// one by one, so a gap in one CPU's numbers is a lost event.
	CPU  uint32
	Seq  uint32
	PID  int32
	TGID int32
	// Comm is the new name of a Comm event.
	Comm [16]byte
}

const (
	nlmsgHdrLen = 16
	cnMsgLen    = 20
	// proc_event: what, cpu, timestamp_ns, then the union.
	evData = 16
	// cn_proc's connector id.
	idxProc = 1
	valProc = 1
	// PROC_CN_MCAST_LISTEN
	mcastListen = 1
)

// Conn is a socket listening to process events.
type Conn struct {
	fd   int
	file *os.File // owns fd; non-blocking, for the Go netpoller
}

// Open binds a socket to the process events group and asks for every
// event. rcvbuf is the socket's receive buffer in bytes (0: the
// system's default); past it the kernel drops events and says so
// (ENOBUFS on the next receive).
func Open(rcvbuf int) (*Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("netlink connector socket: %w", err)
	}
	if rcvbuf > 0 {
		// FORCE: past net.core.rmem_max, which root may do.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: idxProc}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding to the process events connector: %w", err)
	}
	if err := unix.Sendto(fd, listenRequest(), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("asking for process events: %w", err)
	}
	return &Conn{fd: fd, file: os.NewFile(uintptr(fd), "cn_proc")}, nil
}

// listenRequest is nlmsghdr + cn_msg + PROC_CN_MCAST_LISTEN.
func listenRequest() []byte {
	b := make([]byte, nlmsgHdrLen+cnMsgLen+4)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.NLMSG_DONE)
	ne.PutUint32(b[16:], idxProc)
	ne.PutUint32(b[20:], valProc)
	ne.PutUint16(b[32:], 4)
	ne.PutUint32(b[36:], mcastListen)
	return b
}

// File is the socket as an *os.File, for waiting in the Go netpoller.
func (c *Conn) File() *os.File { return c.file }

// Close closes the socket.
func (c *Conn) Close() error { return c.file.Close() }

// ErrLost says the kernel dropped events for want of room in the
// socket's buffer (ENOBUFS).
var ErrLost = errors.New("process events lost")

// Recv reads one datagram into buf without waiting and without
// allocating, and passes its events to fn. It returns unix.EAGAIN when
// nothing is queued, ErrLost when the kernel dropped events since the
// last call. Datagrams that are not the kernel's are ignored: only root
// can send to the group, but only the kernel speaks for it.
func (c *Conn) Recv(buf []byte, fn func(*Event)) error {
	var sa unix.RawSockaddrNetlink
	salen := uint32(unsafe.Sizeof(sa))
	// Raw: a non-blocking receive does not block, and this runs on the
	// permission path.
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(c.fd), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&salen)))
	switch errno {
	case 0:
	case unix.ENOBUFS:
		return ErrLost
	default:
		return errno
	}
	if sa.Pid != 0 {
		return nil
	}
	return Parse(buf[:n], fn)
}

// Parse passes the events of one datagram to fn. It returns an error
// for a datagram that is cut short; messages of other connectors and
// unknown kinds are skipped, since a newer kernel may send them.
func Parse(b []byte, fn func(*Event)) error {
	ne := binary.NativeEndian
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return fmt.Errorf("netlink message header cut short: %d bytes", len(b))
		}
		l := int(ne.Uint32(b[0:]))
		if l < nlmsgHdrLen || l > len(b) {
			return fmt.Errorf("netlink message length %d outside 16..%d", l, len(b))
		}
		typ := ne.Uint16(b[4:])
		msg := b[nlmsgHdrLen:l]
		if next := (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1); next < len(b) {
			b = b[next:]
		} else {
			b = nil
		}
		switch typ {
		case unix.NLMSG_NOOP:
			continue
		case unix.NLMSG_ERROR, unix.NLMSG_OVERRUN:
			return fmt.Errorf("netlink message of type %d", typ)
		}
		if len(msg) < cnMsgLen {
			return fmt.Errorf("connector message cut short: %d bytes", len(msg))
		}
		if ne.Uint32(msg[0:]) != idxProc || ne.Uint32(msg[4:]) != valProc {
			continue
		}
		data := msg[cnMsgLen:]
		if dl := int(ne.Uint16(msg[16:])); dl < len(data) {
			data = data[:dl]
		}
		if len(data) < evData {
			return fmt.Errorf("process event cut short: %d bytes", len(data))
		}
		ev := Event{
			What: What(ne.Uint32(data[0:])),
			CPU:  ne.Uint32(data[4:]),
			Seq:  ne.Uint32(msg[8:]),
		}
		u := data[evData:]
		switch ev.What {
		case None:
		case Fork:
			// parent pid, parent tgid, child pid, child tgid
			if len(u) < 16 {
				return fmt.Errorf("fork event cut short: %d bytes", len(u))
			}
			ev.PID, ev.TGID = int32(ne.Uint32(u[8:])), int32(ne.Uint32(u[12:]))
		case Exec, Exit, UID, GID, SID, Ptrace, Comm, Coredump:
			// Every other kind starts with the process's pid and tgid.
			if len(u) < 8 {
				return fmt.Errorf("process event %#x cut short: %d bytes", uint32(ev.What), len(u))
			}
			ev.PID, ev.TGID = int32(ne.Uint32(u[0:])), int32(ne.Uint32(u[4:]))
			if ev.What == Comm {
				if len(u) < 8+16 {
					return fmt.Errorf("comm event cut short: %d bytes", len(u))
				}
				copy(ev.Comm[:], u[8:24])
			}
		default:
			// A kind this build does not know: its numbering still counts.
		}
		fn(&ev)
	}
	return nil
}

// SelfTest checks that events reach this socket and name processes as
// this process sees them: it renames its own thread (to the name it has)
// and waits for the Comm event with its thread id. The connector sends
// only to sockets of the initial network namespace, and its pids are the
// initial PID namespace's: a daemon elsewhere gets nothing, or numbers
// that are not its own. Other events read meanwhile are discarded.
func (c *Conn) SelfTest(timeout time.Duration) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var name [16]byte
	if err := unix.Prctl(unix.PR_GET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err != nil {
		return fmt.Errorf("PR_GET_NAME: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err != nil {
		return fmt.Errorf("PR_SET_NAME: %w", err)
	}
	tid := int32(unix.Gettid())
	buf := make([]byte, 16<<10)
	deadline := time.Now().Add(timeout)
	var other int32
	for {
		found := false
		err := c.Recv(buf, func(ev *Event) {
			if ev.What != Comm || ev.Comm != name {
				return
			}
			if ev.PID == tid {
				found = true
			} else {
				other = ev.PID
			}
		})
		switch {
		case found:
			return nil
		case errors.Is(err, ErrLost):
			// Events dropped, ours perhaps: rename once more.
			if err := unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0); err != nil {
				return fmt.Errorf("PR_SET_NAME: %w", err)
			}
		case errors.Is(err, unix.EAGAIN):
			left := time.Until(deadline)
			if left <= 0 {
				if other != 0 {
					return fmt.Errorf("the connector names this thread %d, not %d: not in the initial PID namespace", other, tid)
				}
				return fmt.Errorf("no process event within %v (not in the initial network namespace?)", timeout)
			}
			fds := []unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
				return fmt.Errorf("poll: %w", err)
			}
		case err != nil:
			return err
		}
	}
}
