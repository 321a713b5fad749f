package proc

import (
	"fmt"
	"io"
	"os"
	"strconv"
)

// MaxEnviron is how much of /proc/PID/environ Environ reads.
const MaxEnviron = 256 << 10

// Environ reads the initial environment of pid, NUL-separated, at most
// MaxEnviron bytes; truncated says there was more. The process can
// rewrite this area of its own memory at will: it says what the process
// shows, not what its loader saw.
func (fs FS) Environ(pid int32) (env []byte, truncated bool, err error) {
	f, err := os.Open(fs.Root + "/" + strconv.Itoa(int(pid)) + "/environ")
	if err != nil {
		return nil, false, fmt.Errorf("reading environ of pid %d: %w", pid, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxEnviron+1))
	if err != nil {
		return nil, false, fmt.Errorf("reading environ of pid %d: %w", pid, err)
	}
	if len(b) > MaxEnviron {
		return b[:MaxEnviron], true, nil
	}
	return b, false, nil
}
