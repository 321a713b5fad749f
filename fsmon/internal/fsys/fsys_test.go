package fsys

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func openDir(t *testing.T, p string) int {
	t.Helper()
	fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestOpenInRootIsConfined: absolute symlinks, ".." and /proc magic
// links below the root resolve inside it or fail; they never reach a
// file outside.
func TestOpenInRootIsConfined(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc", "shadow"), []byte("inner"), 0o644)
	os.WriteFile(filepath.Join(base, "outside"), []byte("outer"), 0o644)
	os.Symlink("/etc/shadow", filepath.Join(root, "abs"))         // inner /etc/shadow, not the host's
	os.Symlink("../../outside", filepath.Join(root, "etc", "up")) // clamped at the root
	os.Symlink("/proc/self/root/outside", filepath.Join(root, "magic"))
	rfd := openDir(t, root)
	// O_PATH descriptors cannot be read: which file they are is told by
	// their inode.
	ino := func(p string) (uint64, error) {
		fd, err := OpenInRoot(rfd, p, 0, 0)
		if err != nil {
			return 0, err
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		return st.Ino, err
	}
	var inner unix.Stat_t
	if err := unix.Stat(filepath.Join(root, "etc", "shadow"), &inner); err != nil {
		t.Fatal(err)
	}
	if i, err := ino("/etc/shadow"); err != nil || i != inner.Ino {
		t.Fatalf("/etc/shadow: %d %v", i, err)
	}
	if i, err := ino("/abs"); err != nil || i != inner.Ino {
		t.Fatalf("absolute symlink: %d %v, want the root's file", i, err)
	}
	if _, err := ino("/etc/up"); err == nil {
		t.Fatal("a ../.. symlink reached a file outside the root")
	}
	if _, err := ino("/magic"); err == nil {
		t.Fatal("a magic link resolved")
	}
	if fd, err := OpenInRoot(rfd, "/", unix.O_DIRECTORY, 0); err != nil {
		t.Fatalf("the root itself: %v", err)
	} else {
		if !SameFile(fd, rfd) {
			t.Error("/ is not the root")
		}
		unix.Close(fd)
	}
}

func TestFDPathAndMountID(t *testing.T) {
	dir := t.TempDir()
	fd := openDir(t, dir)
	var buf [unix.PathMax]byte
	n, err := FDPath(fd, buf[:])
	if err != nil || string(buf[:n]) != dir || Path(fd) != dir {
		t.Fatalf("FDPath %q %v, Path %q, want %q", buf[:n], err, Path(fd), dir)
	}
	if Path(-1) != "" {
		t.Error("Path of a bad fd")
	}
	if MountID(fd) == 0 {
		t.Error("no mount id")
	}
	if MountID(-1) != 0 {
		t.Error("mount id of a bad fd")
	}
	if n := testing.AllocsPerRun(100, func() { FDPath(fd, buf[:]); MountID(fd) }); n != 0 {
		t.Errorf("%v allocations on the permission path's calls", n)
	}
	other := openDir(t, "/")
	if SameFile(fd, other) || !SameFile(fd, fd) {
		t.Error("SameFile")
	}
}
