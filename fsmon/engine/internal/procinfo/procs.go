package procinfo

import "sync"

// procCache keeps the facts of a process that are dear to read
// (command line, user) per (pid, start time, executable): the pid alone
// is reused, and an exec changes the executable but not the start time.
type procCache struct {
	mu  sync.Mutex
	max int
	m   map[int32]procFacts
}

type procFacts struct {
	start   uint64
	exe     string
	cmdline string
	uid     int64
}

func newProcCache(max int) *procCache {
	return &procCache{max: max, m: make(map[int32]procFacts, max)}
}

func (c *procCache) get(pid int32, start uint64, exe string) (procFacts, bool) {
	c.mu.Lock()
	f, ok := c.m[pid]
	c.mu.Unlock()
	return f, ok && f.start == start && f.exe == exe
}

func (c *procCache) put(pid int32, f procFacts) {
	c.mu.Lock()
	if len(c.m) >= c.max {
		// Dropping everything is simpler than an LRU and, with pids
		// coming back round, about as good.
		clear(c.m)
	}
	c.m[pid] = f
	c.mu.Unlock()
}
