package engine

import (
	"os"
	"runtime/debug"
	"testing"
)

// TestMain turns the garbage collector off. These tests are both the
// fanotify responder and the parent of the processes they check, and
// os/exec starts children with vfork: the forking thread keeps its P in
// a raw clone syscall until the child has exec'd. A child whose exec
// opens a marked file waits for our answer; if a collection starts then,
// its stop-the-world waits for that P forever and the responder never
// runs (golang/go has the same deadlock for FUSE servers that exec from
// their own mount). The daemon never forks, so only the tests need this.
//
// The test binary run with FSMON_TEST_FLOOD set is not the tests but a
// flood of openers (flood_test.go): another process, since the engine
// answers its own opens at once.
func TestMain(m *testing.M) {
	if spec := os.Getenv(floodEnv); spec != "" {
		os.Exit(runFlood(spec))
	}
	if path := os.Getenv(quickWriterEnv); path != "" {
		os.Exit(quickWrite(path))
	}
	if spec := os.Getenv(stealEnv); spec != "" {
		os.Exit(runSteal(spec))
	}
	if spec := os.Getenv(neighbourEnv); spec != "" {
		os.Exit(runNeighbourAttack(spec))
	}
	if name := os.Getenv(contentEnv); name != "" {
		os.Exit(runContent(name))
	}
	debug.SetGCPercent(-1)
	os.Exit(m.Run())
}
