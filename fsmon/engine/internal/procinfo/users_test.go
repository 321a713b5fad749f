package procinfo

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestUserNames: a uid is named by the /etc/passwd of the root asked,
// resolved inside that root (an absolute symlink there points into it,
// not to the host's file); the first name of a uid wins, comments and
// broken lines are skipped, and an unknown uid has no name.
func TestUserNames(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "users"), []byte("# c\nbroken\ncroot:x:0:0::/:/bin/sh\nalias:x:0:0::/:/bin/sh\nweb:x:33:33::/:/bin/false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/users", filepath.Join(root, "etc", "passwd")); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var u Users
	for uid, want := range map[int64]string{0: "croot", 33: "web", 34: "", -1: ""} {
		if got := u.Name(7, fd, uid); got != want {
			t.Errorf("uid %d: %q, want %q", uid, got, want)
		}
	}
}

// TestGroupNames: a gid is named by the root's own /etc/group, whose
// lines may end at the gid, not by its /etc/passwd; the first name of
// a gid wins.
func TestGroupNames(t *testing.T) {
	root := t.TempDir()
	etc := filepath.Join(root, "etc")
	err := os.MkdirAll(etc, 0o755)
	for name, content := range map[string]string{"group": "wheel:x:0:root\nalias:x:0:\nshadow:x:42\n", "passwd": "croot:x:0:0::/:/bin/sh\n"} {
		if err == nil {
			err = os.WriteFile(filepath.Join(etc, name), []byte(content), 0o644)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	var g GroupNames
	for gid, want := range map[int64]string{0: "wheel", 42: "shadow", 43: ""} {
		if got := g.Name(7, fd, gid); got != want {
			t.Errorf("gid %d: %q, want %q", gid, got, want)
		}
	}
}
