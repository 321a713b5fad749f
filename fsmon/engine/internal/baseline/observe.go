package baseline

import (
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
)

// ErrNotRegular says a watched name is not a regular file now (a
// directory, a symlink, a device): it has no facts.
var ErrNotRegular = errors.New("not a regular file")

// Observed is what Stat saw of a file: its entry without the filter,
// names or hash, and the O_PATH descriptor it saw it through, for Hash.
type Observed struct {
	Entry
	fd int
}

// Stat looks at the file p (absolute, in the root rootFD) without
// following a symlink in its place and without opening it for reading
// (an open of a device can have effects). Close releases it.
func Stat(rootFD int, p string) (*Observed, error) {
	fd, err := fsys.OpenInRoot(rootFD, p, unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, ErrNotRegular
	}
	o := &Observed{fd: fd}
	o.Dev, o.Ino, o.Ctime = st.Dev, st.Ino, st.Ctim.Nano()
	o.Facts = fsmon.FileFacts{Size: st.Size, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
		Mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec)}
	return o, nil
}

// Close releases the descriptor.
func (o *Observed) Close() { unix.Close(o.fd) }

// Unchanged reports whether o is the file e describes with the same
// content, as far as the inode says: the same identity, size, mtime and
// ctime (which no one can set). Then e's hash is o's.
func (o *Observed) Unchanged(e *Entry) bool {
	return e != nil && e.Dev == o.Dev && e.Ino == o.Ino && e.Ctime == o.Ctime &&
		e.Facts.Size == o.Facts.Size && e.Facts.Mtime.Equal(o.Facts.Mtime)
}

// Hash reads the file and sets its hash, or the reason it has none. It
// reopens the very inode Stat saw (through its descriptor), reads at
// most the size Stat saw, and checks afterwards that the file did not
// change meanwhile. buf is the read buffer.
func (o *Observed) Hash(buf []byte) {
	var pb [40]byte
	p := append(pb[:0], "/proc/self/fd/"...)
	p = strconv.AppendInt(p, int64(o.fd), 10)
	f, err := os.OpenFile(string(p), os.O_RDONLY|unix.O_NOATIME|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if errors.Is(err, unix.EPERM) {
		// O_NOATIME is for the file's owner or CAP_FOWNER only.
		f, err = os.OpenFile(string(p), os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	}
	if err != nil {
		o.Facts.Hash = fsmon.HashSkippedUnreadable
		return
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.CopyBuffer(h, io.LimitReader(f, o.Facts.Size+1), buf)
	if err != nil {
		o.Facts.Hash = fsmon.HashSkippedUnreadable
		return
	}
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil || n != o.Facts.Size || st.Size != o.Facts.Size ||
		st.Ctim.Nano() != o.Ctime || st.Ino != o.Ino {
		o.Facts.Hash = fsmon.HashSkippedChanging
		return
	}
	h.Sum(o.Facts.SHA256[:0])
	o.Facts.Hash = fsmon.HashComputed
}
