package engine

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// TestAdoptRacingAGroupsEnd: a file new in a container's protected
// directory gets its marks before its creator's answer (Adopt), on the
// permission loop, which never waits for the placement lock. When the
// container's group ends between those marks and the file's table entry
// (DropGroup), the entry must not be made with the gone group's rules:
// it would belong to no group, and its marks and entry would stay for
// good (the marks the soak found left after container churn).
func TestAdoptRacingAGroupsEnd(t *testing.T) {
	testroot.Require(t)
	root := busyboxRoot(t)
	h := startScanning(t, scanForTests, containerConfig)
	base := totalMarks(h)
	c := startContainer(t, root, "web-1", cgroupV2Docker)
	defer c.stop()
	waitGroup(t, h, c, true)
	h.mu.RLock()
	var g *group
	for _, x := range h.groups {
		if x.ContainerID == c.id {
			g = x
		}
	}
	h.mu.RUnlock()
	if g == nil {
		t.Fatal("no group for the container")
	}

	// The group ends inside the first Adopt, after its marks.
	dropped := make(chan struct{})
	var once sync.Once
	hook := func() {
		once.Do(func() {
			pl := h.marks.Place()
			h.dropGroup(pl, g)
			pl.Done()
			close(dropped)
		})
	}
	h.marks.SetAdoptHook(&hook)
	defer h.marks.SetAdoptHook(nil)
	// A new file under the recursive block filter /data: sh is not in
	// its allow list, so the create is denied, but the file is there and
	// is adopted before the answer either way.
	// A create that the kernel reports through another way than the
	// directory's mark (none is expected) would not come to Adopt: a
	// new name each time until one does.
	for i := 0; ; i++ {
		c.exec(t, "sh", "-c", fmt.Sprintf("echo x > /data/new-%s-%d", filepath.Base(t.Name()), i))
		select {
		case <-dropped:
		default:
			if i < 50 {
				continue
			}
			t.Fatal("50 new files and no Adopt")
		}
		break
	}
	h.marks.SetAdoptHook(nil)

	// The next scan finds the container again (it still runs) and walks
	// it afresh; once it is stopped and its new group is gone, every
	// mark of it must be gone too.
	c.stop()
	waitGroup(t, h, c, false)
	eventually(t, "marks back to the host's", func() error {
		if n := totalMarks(h); n != base {
			return fmt.Errorf("marks %d, want %d (before the container)", n, base)
		}
		return nil
	})
}

func totalMarks(h *harness) int {
	n := 0
	for _, c := range h.marks.Counts().Total {
		n += c
	}
	return n
}
