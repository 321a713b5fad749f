// Package fanotify is a thin, typed layer over fanotify(7): groups, marks,
// reading events in batches and answering permission events. It owns the
// group's file descriptor and knows nothing of policy.
package fanotify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Mask is a set of fanotify event bits.
type Mask uint64

// Event bits (fanotify_mark(2)).
const (
	Access       Mask = unix.FAN_ACCESS
	Modify       Mask = unix.FAN_MODIFY
	Attrib       Mask = unix.FAN_ATTRIB
	CloseWrite   Mask = unix.FAN_CLOSE_WRITE
	Open         Mask = unix.FAN_OPEN
	MovedFrom    Mask = unix.FAN_MOVED_FROM
	MovedTo      Mask = unix.FAN_MOVED_TO
	Create       Mask = unix.FAN_CREATE
	Delete       Mask = unix.FAN_DELETE
	DeleteSelf   Mask = unix.FAN_DELETE_SELF
	MoveSelf     Mask = unix.FAN_MOVE_SELF
	OpenExec     Mask = unix.FAN_OPEN_EXEC
	QOverflow    Mask = unix.FAN_Q_OVERFLOW
	OpenPerm     Mask = unix.FAN_OPEN_PERM
	AccessPerm   Mask = unix.FAN_ACCESS_PERM
	OpenExecPerm Mask = unix.FAN_OPEN_EXEC_PERM
	// PreAccess is asked before every read, write, mmap or truncate of
	// a file's content (Linux 6.14, pre-content groups only), whichever
	// descriptor it goes through, as long as the file was opened while
	// something watched it for pre-content events (see Arm).
	PreAccess    Mask = unix.FAN_PRE_ACCESS
	OnDir        Mask = unix.FAN_ONDIR
	EventOnChild Mask = unix.FAN_EVENT_ON_CHILD

	// PermEvents are the events that wait for an answer.
	PermEvents = OpenPerm | AccessPerm | OpenExecPerm | PreAccess
)

// Has reports whether every bit of o is in m.
func (m Mask) Has(o Mask) bool { return m&o == o }

// Any reports whether some bit of o is in m.
func (m Mask) Any(o Mask) bool { return m&o != 0 }

// Class is the notification class of a group (fanotify_init(2)); only the
// content classes may receive permission events.
type Class uint

const (
	ClassNotif   Class = unix.FAN_CLASS_NOTIF
	ClassContent Class = unix.FAN_CLASS_CONTENT
	// ClassPreContent answers everything ClassContent does, and
	// PreAccess besides.
	ClassPreContent Class = unix.FAN_CLASS_PRE_CONTENT
)

func (c Class) String() string {
	switch c {
	case ClassNotif:
		return "notification"
	case ClassContent:
		return "content"
	case ClassPreContent:
		return "pre-content"
	}
	return "class(" + strconv.Itoa(int(c)) + ")"
}

// Report says what a notification group's events carry beside the pid.
type Report uint

const (
	ReportFD      Report = 0 // an open fd of the object (the only choice for content groups)
	ReportFIDName Report = unix.FAN_REPORT_FID | unix.FAN_REPORT_DFID_NAME
)

// Queue selects the kernel queue bound.
type Queue uint

const (
	// QueueBounded uses fs.fanotify.max_queued_events; past it events are
	// lost for one overflow event.
	QueueBounded Queue = 0
	// QueueUnlimited never drops: required for permission groups, since a
	// permission event that finds the queue full is never asked about and
	// the access goes ahead (a flood must not become a way around a deny).
	QueueUnlimited Queue = unix.FAN_UNLIMITED_QUEUE
)

// Reads selects how the group's events are read.
type Reads uint

const (
	// ReadsPolled: a non-blocking fd read through the Go netpoller
	// (File), for loops whose latency does not sit in anyone's open.
	ReadsPolled Reads = unix.FAN_NONBLOCK
	// ReadsBlocking: a blocking read(2) on a thread of its own, the
	// fewest syscalls and wakeups between an open and its answer.
	ReadsBlocking Reads = 0
)

// ErrUnsupported wraps errors of features the kernel lacks.
var ErrUnsupported = errors.New("fanotify feature not supported by this kernel")

// Group is one fanotify group.
type Group struct {
	fd     int
	class  Class
	file   *os.File // ReadsPolled only: owns fd, whose reads park in the Go netpoller
	closed atomic.Bool
	// pass is the way Pass asks for its ignore marks (passFlags): it
	// moves on when the kernel says EINVAL to one.
	pass atomic.Uint32
}

// New makes a group. Event fds are opened read-only, close-on-exec, and
// without touching the file's access time where the daemon may.
func New(class Class, report Report, queue Queue, reads Reads) (*Group, error) {
	flags := uint(class) | uint(report) | uint(queue) | uint(reads) | unix.FAN_CLOEXEC | unix.FAN_UNLIMITED_MARKS
	fd, err := unix.FanotifyInit(flags, unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC|unix.O_NOATIME)
	if errors.Is(err, unix.EPERM) {
		// O_NOATIME needs ownership or CAP_FOWNER; retry without it.
		fd, err = unix.FanotifyInit(flags, unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC)
	}
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("fanotify_init(%#x): %w: %w", flags, ErrUnsupported, err)
		}
		return nil, fmt.Errorf("fanotify_init(%#x): %w", flags, err)
	}
	g := &Group{fd: fd, class: class}
	if reads == ReadsPolled {
		g.file = os.NewFile(uintptr(fd), "fanotify")
	}
	return g, nil
}

// NewPermission makes a permission group of the pre-content class where
// the kernel has it, else (EINVAL: before Linux 6.14) of the content
// class, which answers the same open events but no PreAccess. Class says
// which it got; a content-class group is not an error.
func NewPermission(queue Queue, reads Reads) (*Group, error) {
	g, err := New(ClassPreContent, ReportFD, queue, reads)
	if errors.Is(err, ErrUnsupported) {
		return New(ClassContent, ReportFD, queue, reads)
	}
	return g, err
}

// Class is the class the group was made with.
func (g *Group) Class() Class { return g.class }

// SetNonblock makes reads of a blocking group return EAGAIN when there is
// nothing to read: how its loop drains the queue when it stops.
func (g *Group) SetNonblock() error { return unix.SetNonblock(g.fd, true) }

// File is a ReadsPolled group's descriptor as an *os.File, for reading
// through the Go netpoller; nil for ReadsBlocking.
func (g *Group) File() *os.File { return g.file }

// FD is the group's descriptor, whose marks /proc/self/fdinfo/FD lists:
// how tests check which kinds of mark the engine placed.
func (g *Group) FD() int { return g.fd }

// Close closes the group. The kernel allows every permission event still
// pending: the system fails open.
func (g *Group) Close() error {
	if g.closed.Swap(true) {
		return nil
	}
	if g.file != nil {
		return g.file.Close()
	}
	return unix.Close(g.fd)
}

// fdPath names the object an O_PATH fd refers to. fanotify_mark does not
// take O_PATH fds as its object, but resolving /proc/self/fd/N lands on
// exactly the inode the fd was opened on, whatever the path held.
func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// procFD is a descriptor of /proc/self/fd, opened once: marks name their
// object as "N" in it (markAt), one component to resolve instead of four
// (with a filter per file or a million files, the lookup of /proc/self/fd
// was a third of start-up's syscall time, issue 19). -1: not opened, use
// fdPath.
var procFD = sync.OnceValue(func() int {
	fd, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1
	}
	return fd
})

// markAt is fanotify_mark of the object the O_PATH fd refers to.
func markAt(group int, flags uint, mask uint64, fd int) error {
	if d := procFD(); d >= 0 {
		return unix.FanotifyMark(group, flags, mask, d, strconv.Itoa(fd))
	}
	return unix.FanotifyMark(group, flags, mask, unix.AT_FDCWD, fdPath(fd))
}

// Add adds mask to the mark of the object fd (an O_PATH fd) refers to.
func (g *Group) Add(fd int, mask Mask) error {
	if err := markAt(g.fd, unix.FAN_MARK_ADD, uint64(mask), fd); err != nil {
		return fmt.Errorf("fanotify_mark(add %#x): %w", uint64(mask), err)
	}
	return nil
}

// Remove removes mask from the mark of the object fd refers to.
func (g *Group) Remove(fd int, mask Mask) error {
	if err := markAt(g.fd, unix.FAN_MARK_REMOVE, uint64(mask), fd); err != nil {
		return fmt.Errorf("fanotify_mark(remove %#x): %w", uint64(mask), err)
	}
	return nil
}

// Pass puts an ignore mask of mask on the inode of the open fd (an
// event's fd: a regular descriptor, marked directly, no path lookup), so
// that the group's directory marks no longer ask about opens of it
// (docs/design/deny.md §9). The mask does not survive modification: the
// kernel clears it at the file's next write or truncate, and does not
// place it at all while any process has the file open for writing
// (measured, 6.18). The mark is evictable where the kernel allows it
// (5.19): it does not pin the inode, and an inode evicted under memory
// pressure only comes back as one more question. ENOENT, EEXIST (the
// inode has a mark of the group that is not evictable) and the like are
// the caller's to ignore: a pass not placed only costs a round trip.
func (g *Group) Pass(fd int32, mask Mask) error {
	for {
		mode := g.pass.Load()
		flags, ok := passFlags(mode)
		if !ok {
			return errPassUnsupported
		}
		_, _, errno := unix.Syscall6(unix.SYS_FANOTIFY_MARK, uintptr(g.fd), uintptr(flags), uintptr(mask), uintptr(fd), 0, 0)
		if errno == 0 {
			return nil
		}
		if errno == unix.EINVAL {
			// Older kernel: the next way of asking (evictable and
			// FAN_MARK_IGNORE came in 5.19 and 6.0).
			g.pass.CompareAndSwap(mode, mode+1)
			continue
		}
		return fmt.Errorf("fanotify_mark(ignore %#x): %w", uint64(mask), errno)
	}
}

// Unpass removes the ignore mask Pass may have placed on the inode fd
// (an O_PATH fd) refers to. A file whose name a filter now covers must
// lose it before anything relies on its own mark: an ignore mask wins
// over the mark's events (measured). ENOENT (no mark at all) is nil.
func (g *Group) Unpass(fd int, mask Mask) error {
	flags := uint(unix.FAN_MARK_REMOVE | unix.FAN_MARK_IGNORE)
	if g.pass.Load() >= 2 {
		flags = unix.FAN_MARK_REMOVE | unix.FAN_MARK_IGNORED_MASK
	}
	err := markAt(g.fd, flags, uint64(mask), fd)
	if err == nil || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if errors.Is(err, unix.EINVAL) && flags&unix.FAN_MARK_IGNORE != 0 {
		err = markAt(g.fd, unix.FAN_MARK_REMOVE|unix.FAN_MARK_IGNORED_MASK, uint64(mask), fd)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
	}
	return fmt.Errorf("fanotify_mark(remove ignore %#x): %w", uint64(mask), err)
}

var errPassUnsupported = errors.New("the kernel refuses inode ignore masks")

// passFlags are the ways of asking for Pass's mark, best first.
func passFlags(mode uint32) (uint, bool) {
	switch mode {
	case 0:
		return unix.FAN_MARK_ADD | unix.FAN_MARK_IGNORE | unix.FAN_MARK_EVICTABLE, true
	case 1:
		return unix.FAN_MARK_ADD | unix.FAN_MARK_IGNORE, true
	case 2:
		return unix.FAN_MARK_ADD | unix.FAN_MARK_IGNORED_MASK, true
	}
	return 0, false
}

// Guard says what of a file's content, beyond its opens, a group's
// marks judge.
type Guard uint8

const (
	// GuardNone: only opens are judged.
	GuardNone Guard = iota
	// GuardReadOnly: FAN_ACCESS_PERM, where pre-content events are not
	// to be had (tmpfs, overlayfs, kernels before 6.14). Reads through
	// descriptors opened after the mark (or after arming) are judged;
	// writes, mmap and truncate go through.
	GuardReadOnly
	// GuardPreContent: FAN_PRE_ACCESS. Every read, write, mmap and
	// truncate is judged, through any descriptor opened after the mark
	// or after the file system was armed.
	GuardPreContent
)

func (g Guard) String() string {
	switch g {
	case GuardReadOnly:
		return "read-only"
	case GuardPreContent:
		return "pre-content"
	}
	return "none"
}

// Mask is the content event g stands for.
func (g Guard) Mask() Mask {
	switch g {
	case GuardReadOnly:
		return AccessPerm
	case GuardPreContent:
		return PreAccess
	}
	return 0
}

// preContentRefused reports whether a PreAccess mark failed because the
// file system (EOPNOTSUPP: tmpfs, overlayfs) or the kernel (EINVAL:
// before 6.14, where the pre-content class exists but not the event)
// has no pre-content events.
func preContentRefused(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)
}

// AddGuarded adds base plus the best content guard the object's file
// system allows to the inode mark of fd: PreAccess in a pre-content
// group where it is supported, else AccessPerm. The Guard says which; a
// read-only guard is not an error.
func (g *Group) AddGuarded(fd int, base Mask) (Guard, error) {
	if g.class == ClassPreContent {
		err := g.Add(fd, base|PreAccess)
		if err == nil {
			return GuardPreContent, nil
		}
		if !preContentRefused(err) {
			return GuardNone, err
		}
	}
	if err := g.Add(fd, base|AccessPerm); err != nil {
		return GuardNone, err
	}
	return GuardReadOnly, nil
}

// Arm marks the whole file system fd is on so that every file opened on
// it from now on is watched for content events at each read and write,
// against whatever inode marks of any group it has at that moment. The
// kernel decides at open(2) whether a file will ever produce content
// events, so without this a descriptor opened before a file's own mark
// (a new file, the walk's window) is never judged.
//
// The mark is an ignore mask of the content event that survives
// modification (FAN_MARK_IGNORE_SURV) and no event mask: the group itself
// gets no event. It must be a group of its own: in the deciding group the
// ignore mask would mute its inode marks too (measured). Its reader
// should still allow whatever it reads.
func (g *Group) Arm(fd int) (Guard, error) {
	if g.class == ClassPreContent {
		err := g.markFS(fd, PreAccess)
		if err == nil {
			return GuardPreContent, nil
		}
		if !preContentRefused(err) {
			return GuardNone, err
		}
	}
	if err := g.markFS(fd, AccessPerm); err != nil {
		return GuardNone, err
	}
	return GuardReadOnly, nil
}

func (g *Group) markFS(fd int, m Mask) error {
	// An ignore mask alone arms (measured, 6.18: the kernel's open-time
	// test looks at the object's combined mask, ignore bits included),
	// and a mark with no event bits can never queue an event, so
	// nothing here can ever wait for this group's reader. The old
	// FAN_MARK_IGNORED_MASK would be cleared at the first write of any
	// file; without IGNORED_SURV_MODIFY the new one is EINVAL.
	const fs = unix.FAN_MARK_ADD | unix.FAN_MARK_FILESYSTEM | unix.FAN_MARK_IGNORE_SURV
	if err := markAt(g.fd, fs, uint64(m), fd); err != nil {
		return fmt.Errorf("fanotify_mark(filesystem ignore %#x): %w", uint64(m), err)
	}
	return nil
}

// Disarm removes the file system mark Arm placed with guard gd.
func (g *Group) Disarm(fd int, gd Guard) error {
	if err := markAt(g.fd, unix.FAN_MARK_REMOVE|unix.FAN_MARK_FILESYSTEM|unix.FAN_MARK_IGNORE, uint64(gd.Mask()), fd); err != nil {
		return fmt.Errorf("fanotify_mark(remove filesystem %#x): %w", uint64(gd.Mask()), err)
	}
	return nil
}

// Verdict is the answer to a permission event.
type Verdict uint32

const (
	Allow Verdict = unix.FAN_ALLOW
	Deny  Verdict = unix.FAN_DENY
)

// DenyErrno is a deny whose failed call returns e instead of EPERM. Only
// pre-content groups take one, and only EPERM, EIO, EBUSY-like values
// (EACCES is refused); Respond falls back to a plain Deny when the
// kernel refuses it.
func DenyErrno(e unix.Errno) Verdict {
	return Deny | Verdict(uint32(e)<<unix.FAN_ERRNO_SHIFT)
}

// Denies reports whether v is a deny, with or without an errno.
func (v Verdict) Denies() bool { return v&(unix.FAN_ALLOW|unix.FAN_DENY) == Deny }

// Errno is the errno a DenyErrno carries, 0 for none.
func (v Verdict) Errno() unix.Errno {
	return unix.Errno(uint32(v) >> unix.FAN_ERRNO_SHIFT & unix.FAN_ERRNO_MASK)
}

func (v Verdict) String() string {
	if v.Denies() {
		if e := v.Errno(); e != 0 {
			return "deny(" + e.Error() + ")"
		}
		return "deny"
	}
	return "allow"
}

// Respond answers the permission event whose fd is eventFD. It must be
// called before eventFD is closed: the kernel matches answers by fd
// number, and a reused number would take the answer meant for another.
// A deny with an errno that the kernel refuses (EINVAL: a content-class
// group, or an errno it does not pass on) would leave the event pending
// and its process waiting until the group closes, so it is written again
// as a plain Deny.
func (g *Group) Respond(eventFD int32, v Verdict) error {
	errno := g.respond(eventFD, v)
	if errno == unix.EINVAL && v.Denies() && v != Deny {
		errno = g.respond(eventFD, Deny)
	}
	if errno != 0 {
		return fmt.Errorf("fanotify response %s for fd %d: %w", v, eventFD, errno)
	}
	return nil
}

func (g *Group) respond(eventFD int32, v Verdict) unix.Errno {
	resp := unix.FanotifyResponse{Fd: eventFD, Response: uint32(v)}
	// A raw syscall: writing an answer never blocks, and the runtime's
	// syscall bookkeeping is a measurable share of a decision.
	_, _, errno := unix.RawSyscall(unix.SYS_WRITE, uintptr(g.fd), uintptr(unsafe.Pointer(&resp)), unsafe.Sizeof(resp))
	return errno
}

// Read reads a batch of events into buf, returning the number of bytes;
// unix.EAGAIN when there is none.
func (g *Group) Read(buf []byte) (int, error) {
	for {
		n, err := unix.Read(g.fd, buf)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

const metadataLen = int(unsafe.Sizeof(unix.FanotifyEventMetadata{}))

// Event is one parsed event. Name, Dir and File refer into the read
// buffer and are valid until the next Read.
type Event struct {
	Mask Mask
	FD   int32 // -1 (FAN_NOFD) for FID groups and overflow
	PID  int32
	// FID groups: the directory entry the event is about.
	Dir  FID
	Name []byte
	// FID groups: the object itself, when the kernel reports it.
	File FID
	// PreAccess events: the bytes the call is about, page-aligned by
	// the kernel; HasRange is false when no range record came.
	Range    Range
	HasRange bool
}

// Range is a FAN_EVENT_INFO_TYPE_RANGE record: a read of 4 bytes at 0 is
// {0, 4096}, a truncate to 0 is {0, 0}.
type Range struct {
	Offset, Count uint64
}

// FID is a file identifier: the file system id and a file handle.
type FID struct {
	FSID       [8]byte
	HandleType int32
	Handle     []byte
}

// Valid reports whether the kernel gave this FID.
func (f FID) Valid() bool { return len(f.Handle) > 0 }

// ErrShortEvent says the kernel returned an event the parser cannot
// trust; reading must resynchronise.
var ErrShortEvent = errors.New("fanotify: truncated event")

// Parse calls fn for each event in buf[:n]. It stops at the first
// malformed event with ErrShortEvent.
func Parse(buf []byte, fn func(ev *Event)) error {
	var ev Event
	for off := 0; off < len(buf); {
		if len(buf)-off < metadataLen {
			return ErrShortEvent
		}
		md := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
		evLen := int(md.Event_len)
		mdLen := int(md.Metadata_len)
		if evLen < metadataLen || off+evLen > len(buf) || md.Vers != unix.FANOTIFY_METADATA_VERSION ||
			mdLen < metadataLen || mdLen > evLen {
			return ErrShortEvent
		}
		ev = Event{Mask: Mask(md.Mask), FD: md.Fd, PID: md.Pid}
		parseInfo(buf[off+mdLen:off+evLen], &ev)
		fn(&ev)
		off += evLen
	}
	return nil
}

// parseInfo reads the info records after the metadata (FID groups, and
// the range of pre-content events).
func parseInfo(b []byte, ev *Event) {
	for len(b) >= 4 {
		typ := b[0]
		l := int(binary.NativeEndian.Uint16(b[2:4]))
		if l < 4 || l > len(b) {
			return
		}
		rec := b[4:l]
		switch typ {
		case unix.FAN_EVENT_INFO_TYPE_FID, unix.FAN_EVENT_INFO_TYPE_DFID, unix.FAN_EVENT_INFO_TYPE_DFID_NAME:
			fid, rest, ok := parseFID(rec)
			if !ok {
				break
			}
			if typ == unix.FAN_EVENT_INFO_TYPE_FID {
				ev.File = fid
			} else {
				ev.Dir = fid
			}
			if typ == unix.FAN_EVENT_INFO_TYPE_DFID_NAME {
				if i := indexNUL(rest); i >= 0 {
					ev.Name = rest[:i]
				}
			}
		case unix.FAN_EVENT_INFO_TYPE_RANGE:
			// struct fanotify_event_info_range { hdr; __u32 pad; __u64 offset, count; }
			if len(rec) >= 20 {
				ev.Range = Range{Offset: binary.NativeEndian.Uint64(rec[4:12]), Count: binary.NativeEndian.Uint64(rec[12:20])}
				ev.HasRange = true
			}
		}
		b = b[l:]
	}
}

func parseFID(rec []byte) (FID, []byte, bool) {
	// __kernel_fsid_t fsid; struct file_handle { u32 handle_bytes; i32 handle_type; u8 f_handle[]; }
	if len(rec) < 16 {
		return FID{}, nil, false
	}
	var f FID
	copy(f.FSID[:], rec[:8])
	hb := int(binary.NativeEndian.Uint32(rec[8:12]))
	f.HandleType = int32(binary.NativeEndian.Uint32(rec[12:16]))
	if 16+hb > len(rec) {
		return FID{}, nil, false
	}
	f.Handle = rec[16 : 16+hb]
	return f, rec[16+hb:], true
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// CloseFD closes an event's fd.
func CloseFD(fd int32) {
	if fd >= 0 {
		// Raw for the same reason as Respond: closing an event fd does
		// not block.
		unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	}
}

// Fsid returns the file system id of the object fd refers to, in the form
// FID events carry it.
func Fsid(fd int) ([8]byte, error) {
	var st unix.Statfs_t
	var out [8]byte
	if err := unix.Fstatfs(fd, &st); err != nil {
		return out, fmt.Errorf("fstatfs: %w", err)
	}
	binary.NativeEndian.PutUint32(out[0:4], uint32(st.Fsid.Val[0]))
	binary.NativeEndian.PutUint32(out[4:8], uint32(st.Fsid.Val[1]))
	return out, nil
}

// Handle returns the file handle of the object fd refers to.
func Handle(fd int) (int32, []byte, error) {
	h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if errors.Is(err, unix.EOPNOTSUPP) {
		// File systems that cannot export handles (overlayfs without
		// nfs_export: the root of nearly every container) still give the
		// handle fanotify reports, for comparison only (Linux 6.5).
		h, _, err = unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH|atHandleFID)
	}
	if err != nil {
		return 0, nil, fmt.Errorf("name_to_handle_at: %w", err)
	}
	return h.Type(), append([]byte(nil), h.Bytes()...), nil
}

// atHandleFID is AT_HANDLE_FID of linux/fcntl.h, which x/sys lacks.
const atHandleFID = 0x200

// OpenHandle opens the object a FID names, relative to any fd on the same
// file system, as an O_PATH fd.
func OpenHandle(mountFD int, f FID) (int, error) {
	fh := unix.NewFileHandle(f.HandleType, f.Handle)
	fd, err := unix.OpenByHandleAt(mountFD, fh, unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return -1, fmt.Errorf("open_by_handle_at: %w", err)
	}
	return fd, nil
}
