package proc

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// MaxEnviron is how much of /proc/PID/environ ScanEnviron reads.
const MaxEnviron = 1 << 20

// ScanEnviron scans the initial environment of pid (NUL-separated) with
// s for the loader's variables, in pieces read into buf, at most MaxEnviron bytes; truncated says there
// was more. It allocates nothing. The process can rewrite this area of
// its own memory at will: it says what the process shows, not what its
// loader saw.
func (fs FS) ScanEnviron(pid int32, buf []byte, s *fsmon.LoaderScan) (truncated bool, err error) {
	var pb [64]byte
	fd, err := openNoAlloc(fs.path(pb[:0], pid, "environ"))
	if err != nil {
		return false, fmt.Errorf("reading environ of pid %d: %w", pid, err)
	}
	defer unix.Close(fd)
	total := 0
	for total <= MaxEnviron {
		n, err := unix.Read(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("reading environ of pid %d: %w", pid, err)
		}
		if n == 0 {
			return false, nil
		}
		s.Scan(buf[:n])
		total += n
	}
	return true, nil
}
