package procinfo

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/fsys"
)

// Users names uids by the /etc/passwd of the root they are asked in:
// a container's processes by the container's own file, the host's by
// the host's. Each root's file is parsed once and again when it changes
// (looked at, by a stat, at most every UsersRecheck).
type Users struct{ accounts }

// GroupNames names gids by the /etc/group of the root they are asked
// in, as Users names uids.
type GroupNames struct{ accounts }

// accounts names ids by one account file (name:password:id:...) of each
// root.
type accounts struct {
	mu sync.Mutex
	m  map[uint64]*passwd // by the root's key (its mount namespace)
}

// UsersRecheck is how often a root's /etc/passwd is looked at again.
const UsersRecheck = time.Second

// maxPasswd bounds what is read of one /etc/passwd.
const maxPasswd = 4 << 20

type passwd struct {
	checked time.Time
	id      fsys.FileID
	mtime   unix.Timespec
	size    int64
	names   map[int64]string
}

// Name is the name of uid in /etc/passwd below rootFD (the root of the
// group whose key is key); "" when the uid is unknown there or the file
// cannot be read.
func (u *Users) Name(key uint64, rootFD int, uid int64) string {
	return u.name("etc/passwd", key, rootFD, uid)
}

// Name is the name of gid in /etc/group below rootFD, as Users.Name.
func (g *GroupNames) Name(key uint64, rootFD int, gid int64) string {
	return g.name("etc/group", key, rootFD, gid)
}

// name is the name of id in file (relative to the root) below rootFD.
func (u *accounts) name(file string, key uint64, rootFD int, uid int64) string {
	if uid < 0 || rootFD < 0 {
		return ""
	}
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.m == nil || len(u.m) > 1024 {
		u.m = map[uint64]*passwd{}
	}
	pw := u.m[key]
	if pw == nil || now.Sub(pw.checked) >= UsersRecheck {
		pw = reload(pw, rootFD, file)
		pw.checked = now
		u.m[key] = pw
	}
	return pw.names[uid]
}

// reload reads file below rootFD unless it is the file pw read.
func reload(pw *passwd, rootFD int, file string) *passwd {
	// Read, not O_PATH (fsys.OpenInRoot's), and confined to the root as
	// it: a container's symlinks cannot send the daemon out of it.
	how := unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(rootFD, file, &how)
	if err != nil {
		return &passwd{}
	}
	f := os.NewFile(uintptr(fd), "passwd")
	defer f.Close()
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return &passwd{}
	}
	id := fsys.FileID{Dev: st.Dev, Ino: st.Ino}
	if pw != nil && pw.id == id && pw.mtime == st.Mtim && pw.size == st.Size {
		return pw
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPasswd))
	if err != nil {
		return &passwd{}
	}
	return &passwd{id: id, mtime: st.Mtim, size: st.Size, names: parsePasswd(b)}
}

// parsePasswd maps ids to names: name:password:id:... (/etc/passwd,
// and /etc/group, whose lines may end at the id), the first name of an
// id wins, as getpwuid(3) and getgrgid(3) do.
func parsePasswd(b []byte) map[int64]string {
	names := map[int64]string{}
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		f := bytes.SplitN(line, []byte(":"), 4)
		if len(f) < 3 || len(f[0]) == 0 || f[0][0] == '#' || f[0][0] == '+' || f[0][0] == '-' {
			continue
		}
		uid, err := strconv.ParseInt(string(f[2]), 10, 64)
		if err != nil || uid < 0 {
			continue
		}
		if _, ok := names[uid]; !ok {
			names[uid] = string(f[0])
		}
	}
	return names
}
