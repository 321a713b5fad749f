package engine

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/engine/internal/marks"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// Recursive filters cover every depth (issue 13, point 7): the walk once
// stopped at 64 levels, silently, and said it was ready.

// chain makes n directories, each called name, one inside the other
// below dir, one openat at a time (so any path length), and returns the
// path of the deepest and an O_PATH fd of it.
func chain(t *testing.T, dir, name string, n int) (string, *os.File) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString(dir)
	for i := 0; i < n; i++ {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			t.Fatalf("level %d: %v", i+1, err)
		}
		next, err := unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("level %d: %v", i+1, err)
		}
		fd = next
		b.WriteString("/" + name)
	}
	f := os.NewFile(uintptr(fd), "deepest")
	t.Cleanup(func() { f.Close() })
	return b.String(), f
}

// createIn creates the file name in the directory dir.
func createIn(t *testing.T, dir *os.File, name string) {
	t.Helper()
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(fd, []byte("k"))
	unix.Close(fd)
}

// catIn runs cat of name in the directory dir, in a child that gets dir
// as its fd 3: /proc/self/fd/3/NAME is short whatever dir's path is.
func catIn(t *testing.T, dir *os.File, name string) res {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "cat", "/proc/self/fd/3/"+name)
	c.ExtraFiles = []*os.File{dir}
	out, err := c.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("cat of %s hung: the open was never answered", name)
	}
	return res{string(out), err}
}

// markedIn waits until the engine tracks the file name of dir with a
// permission mark of its own.
func markedIn(t *testing.T, h *harness, dir *os.File, name string) {
	t.Helper()
	eventually(t, name+" marked", func() error {
		var st unix.Stat_t
		if err := unix.Fstatat(int(dir.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		f, _ := h.marks.Entries(marks.DevIno{Dev: st.Dev, Ino: st.Ino})
		if f == nil || f.Perm == 0 {
			return fmt.Errorf("not marked: %+v", f)
		}
		return nil
	})
}

// overlay mounts an overlayfs (whose file handles cannot be opened: the
// walk keeps its parents' fds instead) and returns the merged directory.
func overlay(t *testing.T) string {
	t.Helper()
	testroot.Require(t)
	base := t.TempDir()
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		os.MkdirAll(filepath.Join(base, d), 0o755)
	}
	merged := filepath.Join(base, "merged")
	opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work", base, base, base)
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", opts, merged).CombinedOutput(); err != nil {
		testroot.Unavailable(t, "no overlayfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", merged).Run() })
	return merged
}

// fileSystems runs f on the disk file system (handles open) and on an
// overlayfs (they do not), with two directories of it: dir for the
// filter, outside beside it.
func fileSystems(t *testing.T, f func(t *testing.T, dir, outside string)) {
	run := func(t *testing.T, base string) {
		dir, outside := filepath.Join(base, "in"), filepath.Join(base, "out")
		os.Mkdir(dir, 0o755)
		os.Mkdir(outside, 0o755)
		f(t, dir, outside)
	}
	t.Run("handles", func(t *testing.T) { run(t, t.TempDir()) })
	t.Run("overlayfs", func(t *testing.T) { run(t, overlay(t)) })
}

func TestRecursiveFilterCoversEveryDepth(t *testing.T) {
	fileSystems(t, func(t *testing.T, dir, outside string) {
		at70, d70 := chain(t, dir, "d", 70)
		at200, d200 := chain(t, at70, "d", 130)
		createIn(t, d70, "f.key")
		createIn(t, d200, "f.key")
		// start asserts that Apply placed everything and the engine is
		// ready; ready must then mean these two are marked.
		h := start(t, protectDir("protect", dir, true))
		if !h.Ready() || h.Snapshot().Unmarked != 0 {
			t.Fatalf("ready %v, unmarked %d", h.Ready(), h.Snapshot().Unmarked)
		}
		for _, c := range []struct {
			dir  *os.File
			path string
		}{{d70, at70}, {d200, at200}} {
			markedIn(t, h, c.dir, "f.key")
			mustDeny(t, cmd(t, "cat", filepath.Join(c.path, "f.key")))
			h.rec.waitFor(t, "deny "+c.path, kind(fsmon.KindDenied, filepath.Join(c.path, "f.key")))
		}
		// A new file at depth 200 is marked by the tree event.
		createIn(t, d200, "new.key")
		markedIn(t, h, d200, "new.key")
		mustDeny(t, cmd(t, "cat", filepath.Join(at200, "new.key")))
		// A tree renamed in there is walked down to its last level.
		sub := filepath.Join(outside, "s", "t")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(sub, "x.key"), "k")
		if err := os.Rename(outside, filepath.Join(at200, "moved")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "deny two levels into a tree moved in", func() error {
			return denied(filepath.Join(at200, "moved", "s", "t", "x.key"))
		})
	})
}

// TestNewFileBeyondPathMax: a file created later in a directory whose
// path is longer than PATH_MAX (4096 bytes), under a recursive block
// filter, is marked (the tree event opens the directory by handle or
// name by name, never by its path) and denied, and the deny names it at
// the path the walk found it at (the kernel cannot name its fd).
func TestNewFileBeyondPathMax(t *testing.T) {
	fileSystems(t, func(t *testing.T, dir, _ string) {
		deep, d := chain(t, dir, strings.Repeat("n", 41), 150)
		if len(deep) <= unix.PathMax {
			t.Fatalf("path of %d bytes: not beyond PATH_MAX", len(deep))
		}
		createIn(t, d, "old.key")
		h := start(t, protectDir("protect", dir, true))
		markedIn(t, h, d, "old.key")
		mustDeny(t, catIn(t, d, "old.key"))
		h.rec.waitFor(t, "deny of old.key", kind(fsmon.KindDenied, deep+"/old.key"))
		createIn(t, d, "new.key")
		markedIn(t, h, d, "new.key")
		mustDeny(t, catIn(t, d, "new.key"))
		h.rec.waitFor(t, "deny of new.key", kind(fsmon.KindDenied, deep+"/new.key"))
		// Not every file there is denied: the filter's regex decides.
		createIn(t, d, "readme")
		mustAllow(t, catIn(t, d, "readme"))
	})
}
