package engine

// Tests of what README.md promises about marks: an inotify overflow walks
// the tree again, a directory that goes loses its marks, file handles
// guard against reused inode numbers, no mount or file system is ever
// marked, and a reload judges moved files by name again.

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/testutil/testroot"
)

// freshExt4 mounts a new, small ext4 file system (a loop device) on a
// directory of its own until the test ends, and returns the directory.
// A new file there gets the lowest free inode number: one just freed
// comes back at once, whatever else the machine does. Call it before
// start, so that the engine, which holds a directory fd on each file
// system it marks, has stopped when it is unmounted.
func freshExt4(t *testing.T) string {
	t.Helper()
	testroot.Require(t)
	mkfs := testroot.RequireCommand(t, "mkfs.ext4")
	img := filepath.Join(t.TempDir(), "ext4.img")
	mnt := t.TempDir()
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		testroot.Unavailable(t, "mounting an ext4 image on a loop device: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	return mnt
}

// keysConfig protects the *.key files of dir (and of its subdirectories
// when recursive) in protect mode.
func keysConfig(dir string, recursive bool) string {
	return fmt.Sprintf(`
profiles:
  - name: t
    host: true
    mode: protect
    filters:
      - name: keys
        path: %s
        regex: '.*\.key'
        recursive: %v
        behavior: block
        allow: [/usr/bin/head]
`, dir, recursive)
}

// kernelMarks counts the marks the kernel holds for a fanotify group, by
// the object they are on, from /proc/self/fdinfo of the group's fd: an
// inode mark is "fanotify ino:...", a mount mark "fanotify mnt_id:...",
// a file system mark "fanotify sdev:..." with no ino. An inode mark with
// an ignore mask and no events ("mask:0 ignored_mask:...") is a pass
// (docs/design/deny.md §9), counted apart: passes are not in the tables.
type kernelMarks struct{ inode, mount, filesystem, passes int }

func readKernelMarks(t *testing.T, fd int) kernelMarks {
	t.Helper()
	f, err := os.Open("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var m kernelMarks
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "fanotify ")
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(rest, "ino:") && strings.Contains(rest, " mask:0 ") && !strings.Contains(rest, " ignored_mask:0 "):
			m.passes++
		case strings.HasPrefix(rest, "ino:"):
			m.inode++
		case strings.HasPrefix(rest, "mnt_id:"):
			m.mount++
		case strings.HasPrefix(rest, "sdev:"):
			m.filesystem++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// marksAgree reports nil when the kernel holds exactly the marks the
// snapshot counts, all on inodes: one for each entry of the tables with
// a mask in a group, plus the permission group's wake file.
func marksAgree(t *testing.T, h *harness) error {
	s := h.Snapshot()
	perm, notif := readKernelMarks(t, h.perm.FD()), readKernelMarks(t, h.notif.FD())
	if n := perm.mount + perm.filesystem + notif.mount + notif.filesystem; n > 0 {
		return fmt.Errorf("mount or file system marks in the kernel: permission group %+v, notification group %+v", perm, notif)
	}
	// File system marks are the arming group's only (one per file
	// system of protect-mode block files).
	armed := 0
	if h.arm != nil {
		a := readKernelMarks(t, h.arm.FD())
		if a.inode+a.mount != 0 {
			return fmt.Errorf("arming group holds inode or mount marks: %+v", a)
		}
		armed = a.filesystem
	}
	if s.Marks[fsmon.MarkMount] != 0 || s.Marks[fsmon.MarkFilesystem] != armed {
		return fmt.Errorf("snapshot counts mount or file system marks %v, the arming group holds %d file system marks", s.Marks, armed)
	}
	want := s.Marks[fsmon.MarkFile] + s.Marks[fsmon.MarkDir] + 1
	if got := perm.inode + notif.inode; got != want {
		return fmt.Errorf("kernel holds %d inode marks (permission %d, notification %d), snapshot says %v (+1 wake file)", got, perm.inode, notif.inode, s.Marks)
	}
	return nil
}

// waitState waits until the snapshot satisfies f: for what the engine
// does when an inotify or fanotify event it must get is handled.
func waitState(t *testing.T, h *harness, what string, f func(s fsmon.State) error) {
	t.Helper()
	eventually(t, what, func() error { return f(h.Snapshot()) })
}

func counts(dirMarks, fileMarks, watches int) func(s fsmon.State) error {
	return func(s fsmon.State) error {
		if s.Marks[fsmon.MarkDir] != dirMarks || s.Marks[fsmon.MarkFile] != fileMarks || s.InotifyWatches != watches {
			return fmt.Errorf("dir marks %d file marks %d watches %d, want %d %d %d",
				s.Marks[fsmon.MarkDir], s.Marks[fsmon.MarkFile], s.InotifyWatches, dirMarks, fileMarks, watches)
		}
		return nil
	}
}

// TestInotifyOverflowWalksTheTreeAgain: what is created while the
// inotify queue overflows, whose creation events the kernel dropped, is
// covered once the overflow is read: the tree is walked again.
func TestInotifyOverflowWalksTheTreeAgain(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	os.Mkdir(keys, 0o755)
	h := start(t, keysConfig(keys, true))
	base := h.Snapshot()

	// Made while the queue is full: their events are lost.
	deep := filepath.Join(keys, "new", "deep")
	fillInotifyQueue(t, h, dir, func() {
		if err := os.MkdirAll(deep, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(deep, "a.key"), "k")
		writeFile(t, filepath.Join(keys, "late.key"), "k")
	})

	waitState(t, h, "the overflow counted", func(s fsmon.State) error {
		if s.Overflows[fsmon.OverflowInotify] < 1 {
			return fmt.Errorf("no inotify overflow counted")
		}
		return nil
	})
	// keys/new and keys/new/deep: a watch and a notification mark each,
	// and a permission mark (the filter blocks); deep/a.key and
	// late.key: a mark in each group.
	waitState(t, h, "the tree walked again", counts(base.Marks[fsmon.MarkDir]+4, base.Marks[fsmon.MarkFile]+4, base.InotifyWatches+2))
	mustDeny(t, cmd(t, "cat", filepath.Join(deep, "a.key")))
	h.rec.waitFor(t, "denied a.key", kind(fsmon.KindDenied, filepath.Join(deep, "a.key")))
	// late.key has marks of its own: moved out of the filter's reach it
	// stays protected (a file only its name covered would not).
	moved := filepath.Join(dir, "late.key")
	if err := os.Rename(filepath.Join(keys, "late.key"), moved); err != nil {
		t.Fatal(err)
	}
	mustDeny(t, cmd(t, "cat", moved))
	// And what is made in the new directories from now on is covered.
	writeFile(t, filepath.Join(deep, "b.key"), "k")
	eventually(t, "b.key protected", func() error { return denied(filepath.Join(deep, "b.key")) })
}

// TestGoneDirectoryLosesItsMarks: rm -r of a covered directory takes its
// table entries, marks and watches with it, and a directory made at the
// same path afterwards (on a fresh ext4, with the same inode numbers)
// is covered again, below it too.
func TestGoneDirectoryLosesItsMarks(t *testing.T) {
	keys := filepath.Join(freshExt4(t), "keys")
	deeper := filepath.Join(keys, "sub", "deeper")
	if err := os.MkdirAll(deeper, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(deeper, "a.key"), "k")
	writeFile(t, filepath.Join(keys, "sub", "b.key"), "k")
	h := start(t, keysConfig(keys, true))
	full := h.Snapshot()
	// keys, sub, deeper: a mark in each group and a watch each; the
	// scaffold above keys has watches only.
	if full.Marks[fsmon.MarkDir] != 6 || full.Marks[fsmon.MarkFile] != 4 {
		t.Fatalf("marks at start %v, want 6 dir and 4 file marks", full.Marks)
	}
	if err := marksAgree(t, h); err != nil {
		t.Fatal(err)
	}

	mustAllow(t, cmd(t, "rm", "-r", filepath.Join(keys, "sub")))
	// Only keys is left: its two marks, and a watch fewer for sub and
	// for deeper each.
	waitState(t, h, "sub and deeper forgotten", counts(2, 0, full.InotifyWatches-2))
	if err := marksAgree(t, h); err != nil {
		t.Fatal(err)
	}

	if err := os.MkdirAll(deeper, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(deeper, "c.key"), "k")
	waitState(t, h, "sub and deeper covered again", counts(6, 2, full.InotifyWatches))
	if err := marksAgree(t, h); err != nil {
		t.Fatal(err)
	}
	mustDeny(t, cmd(t, "cat", filepath.Join(deeper, "c.key")))
	h.rec.waitFor(t, "denied c.key", kind(fsmon.KindDenied, filepath.Join(deeper, "c.key")))
}

// TestReusedInodeNumberIsNotTheProtectedFile: a protected file deleted,
// an unrelated file elsewhere that gets its inode number (ext4 hands the
// lowest free number out again at once) is not the protected one: its
// opens are not denied and nothing is reported under the deleted
// file's filter. Both ways a file goes: a process deletes it, and the
// daemon's process holds the last reference (as its walks and its
// permission events' fds do) and drops it after the delete.
func TestReusedInodeNumberIsNotTheProtectedFile(t *testing.T) {
	for _, lastRef := range []string{"rm", "daemon"} {
		t.Run(lastRef, func(t *testing.T) {
			dir := freshExt4(t)
			a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
			os.Mkdir(a, 0o755)
			os.Mkdir(b, 0o755)
			secret := filepath.Join(a, "secret")
			writeFile(t, secret, "s")
			marker, last := filepath.Join(b, "marker.key"), filepath.Join(b, "last.key")
			writeFile(t, marker, "m")
			writeFile(t, last, "m")
			h := start(t, protectFile("protect", secret)+`
      - name: other
        path: `+b+`
        regex: '.*\.key'
        behavior: block
        allow: [/usr/bin/head]
`)
			mustDeny(t, cmd(t, "cat", secret))
			h.rec.waitFor(t, "denied secret", kind(fsmon.KindDenied, secret))
			var st unix.Stat_t
			if err := unix.Stat(secret, &st); err != nil {
				t.Fatal(err)
			}
			// The permission loop has closed secret's event fd once it
			// has reported a later event: it holds no reference.
			mustDeny(t, cmd(t, "cat", marker))
			h.rec.waitFor(t, "denied marker", kind(fsmon.KindDenied, marker))

			switch lastRef {
			case "rm":
				mustAllow(t, cmd(t, "rm", secret))
			case "daemon":
				fd, err := unix.Open(secret, unix.O_PATH|unix.O_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				mustAllow(t, cmd(t, "rm", secret))
				// The inode goes at this close, in the daemon's process.
				unix.Close(fd)
			}
			// A change the notification loop reads after the inode's
			// FAN_DELETE_SELF: by its report, the file is forgotten.
			mustAllow(t, cmd(t, "chmod", "600", marker))
			h.rec.waitFor(t, "attrib of the marker", change(fsmon.OpAttrib, marker))

			reused := ""
			for i := 0; i < 100 && reused == ""; i++ {
				p := filepath.Join(b, "plain"+strconv.Itoa(i))
				writeFile(t, p, "unrelated")
				var nst unix.Stat_t
				if err := unix.Stat(p, &nst); err != nil {
					t.Fatal(err)
				}
				if nst.Dev == st.Dev && nst.Ino == st.Ino {
					reused = p
				}
			}
			if reused == "" {
				t.Fatalf("a new file system gave inode %d to none of 100 new files", st.Ino)
			}
			reusedAt := time.Now()
			mustAllow(t, cmd(t, "cat", reused))
			mustAllow(t, sh(t, "echo more >> "+reused))
			// Reported after whatever the opens and the write of the
			// reused file would have been, by each of the two loops.
			mustDeny(t, cmd(t, "cat", last))
			mustAllow(t, cmd(t, "chmod", "600", last))
			// Only what came after the reuse: the unlink of secret itself
			// is reported under its filter (its link count changes), read
			// before the marker's change above.
			secretFilter := func(ev *fsmon.Event) bool { return ev.Filter == "secret" && ev.Time.After(reusedAt) }
			h.rec.noneBefore(t, "under the deleted file's filter", secretFilter, "a later denied open", kind(fsmon.KindDenied, last))
			h.rec.noneBefore(t, "under the deleted file's filter", secretFilter, "a later change", change(fsmon.OpAttrib, last))
		})
	}
}

// permEventsOf counts the permission events that opens by this process
// make: each is answered at once, and counted before its answer, so the
// count has moved by the time the open returns.
func permEventsOf(t *testing.T, h *harness, paths ...string) uint64 {
	t.Helper()
	before := h.Snapshot().PermissionEvents
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return h.Snapshot().PermissionEvents - before
}

// TestNoMountOrFilesystemIsMarked: whatever the configuration, the
// kernel holds inode marks only, exactly those the snapshot counts; and
// opens of files on the same file system outside what the filters cover
// never reach the daemon.
func TestNoMountOrFilesystemIsMarked(t *testing.T) {
	defaultYAML, err := os.ReadFile("../policy/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	t.Run("default", func(t *testing.T) {
		h := start(t, string(defaultYAML))
		// The default walks /lib and /usr/lib: eventually, for the rare
		// file another process makes or removes there meanwhile.
		eventually(t, "kernel marks match the snapshot", func() error { return marksAgree(t, h) })
		// It only monitors: no open asks the daemon anything, the
		// permission group holds the wake file's mark alone.
		if perm := readKernelMarks(t, h.perm.FD()); perm.inode != 1 {
			t.Errorf("permission group marks %+v, want the wake file's only", perm)
		}
	})

	t.Run("recursive", func(t *testing.T) {
		dir := t.TempDir()
		keys, logs := filepath.Join(dir, "keys"), filepath.Join(dir, "logs")
		os.MkdirAll(filepath.Join(keys, "a", "b"), 0o755)
		os.MkdirAll(filepath.Join(logs, "x"), 0o755)
		key := filepath.Join(keys, "a", "b", "c.key")
		writeFile(t, key, "k")
		writeFile(t, filepath.Join(logs, "x", "l.log"), "l")
		// Not beside keys or logs: the directory of a filter's path is
		// marked for its children, since the path could name a file.
		os.Mkdir(filepath.Join(dir, "other"), 0o755)
		unrelated := filepath.Join(dir, "other", "unrelated")
		writeFile(t, unrelated, "u")
		h := start(t, keysConfig(keys, true)+`
      - name: logs
        path: `+logs+`
        recursive: true
        report_access: true
`)
		if err := marksAgree(t, h); err != nil {
			t.Fatal(err)
		}
		if n := permEventsOf(t, h, unrelated, "/etc/hostname"); n != 0 {
			t.Fatalf("%d opens of files no filter covers reached the daemon", n)
		}
		if n := permEventsOf(t, h, key, filepath.Join(logs, "x", "l.log")); n != 2 {
			t.Fatalf("opens of 2 covered files made %d permission events", n)
		}
	})

	t.Run("regex path", func(t *testing.T) {
		dir := t.TempDir()
		home := filepath.Join(dir, "home")
		for _, d := range []string{"alice/.ssh", "bob/.ssh", "bob/notes"} {
			os.MkdirAll(filepath.Join(home, d), 0o755)
		}
		key := filepath.Join(home, "bob", ".ssh", "id")
		writeFile(t, key, "k")
		writeFile(t, filepath.Join(home, "bob", "notes", "n"), "n")
		writeFile(t, filepath.Join(home, "bob", "profile"), "p")
		h := start(t, fmt.Sprintf(`
profiles:
  - name: t
    host: true
    mode: protect
    filters:
      - name: ssh
        path: %s/.*/\.ssh
        regex: .*
        behavior: block
        allow: [/usr/bin/head]
`, home))
		if err := marksAgree(t, h); err != nil {
			t.Fatal(err)
		}
		if n := permEventsOf(t, h, filepath.Join(home, "bob", "notes", "n"), filepath.Join(home, "bob", "profile"), "/etc/hostname"); n != 0 {
			t.Fatalf("%d opens of files no filter covers reached the daemon", n)
		}
		if n := permEventsOf(t, h, key); n != 1 {
			t.Fatalf("an open of a covered file made %d permission events", n)
		}
		// A match made later is marked, still on its inode alone.
		os.MkdirAll(filepath.Join(home, "carol", ".ssh"), 0o755)
		writeFile(t, filepath.Join(home, "carol", ".ssh", "id"), "k")
		eventually(t, "carol's key protected", func() error { return denied(filepath.Join(home, "carol", ".ssh", "id")) })
		if err := marksAgree(t, h); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReloadJudgesMovedFilesByName: protection follows the file, so a
// file moved out of a filter's directory stays protected, until a
// reload (Apply of the same policy) judges the tree by name again: then
// it is not protected, and its marks are gone. A file moved in is
// protected by its name at once, and by marks of its own after the
// reload.
func TestReloadJudgesMovedFilesByName(t *testing.T) {
	dir := t.TempDir()
	keys, out := filepath.Join(dir, "keys"), filepath.Join(dir, "out")
	os.Mkdir(keys, 0o755)
	os.Mkdir(out, 0o755)
	writeFile(t, filepath.Join(keys, "a.key"), "a")
	writeFile(t, filepath.Join(out, "b.key"), "b")
	yaml := keysConfig(keys, false)
	h := start(t, yaml)

	movedOut, movedIn := filepath.Join(out, "a.key"), filepath.Join(keys, "b.key")
	mustAllow(t, cmd(t, "mv", filepath.Join(keys, "a.key"), movedOut))
	mustAllow(t, cmd(t, "mv", filepath.Join(out, "b.key"), movedIn))
	mustDeny(t, cmd(t, "cat", movedOut))
	h.rec.waitFor(t, "denied moved out", kind(fsmon.KindDenied, movedOut))
	mustDeny(t, cmd(t, "cat", movedIn))
	h.rec.waitFor(t, "denied moved in", kind(fsmon.KindDenied, movedIn))

	res, err := h.Apply(compile(t, yaml))
	if err != nil || res.Errors > 0 {
		t.Fatalf("apply: %v %+v", err, res)
	}
	reloaded := time.Now()
	// Judged by name: out/a.key is nobody's; its mark is gone, so its
	// opens do not even reach the daemon.
	mustAllow(t, cmd(t, "cat", movedOut))
	if n := permEventsOf(t, h, movedOut); n != 0 {
		t.Fatalf("an open of the file moved out made %d permission events after the reload", n)
	}
	if err := marksAgree(t, h); err != nil {
		t.Fatal(err)
	}
	// keys/b.key has marks of its own now: moved out, it stays protected.
	movedAgain := filepath.Join(out, "b.key")
	mustAllow(t, cmd(t, "mv", movedIn, movedAgain))
	mustDeny(t, cmd(t, "cat", movedAgain))
	h.rec.noneBefore(t, "for the file moved out after the reload", func(ev *fsmon.Event) bool {
		return ev.Path == movedOut && ev.Time.After(reloaded)
	}, "the denied open of the file moved out again", kind(fsmon.KindDenied, movedAgain))
}

// TestInotifyOverflowForgetsWhatWent: a covered directory removed while
// the inotify queue overflows (its IN_DELETE_SELF and IN_IGNORED lost),
// and a new one made at its path (on a fresh ext4, with the same inode
// number), are found out by the walk after the overflow: the old one's
// entries go, the new one is marked and watched like any new directory.
func TestInotifyOverflowForgetsWhatWent(t *testing.T) {
	mnt := freshExt4(t)
	keys := filepath.Join(mnt, "keys")
	old := filepath.Join(keys, "old")
	os.MkdirAll(filepath.Join(old, "sub"), 0o755)
	writeFile(t, filepath.Join(old, "sub", "x.key"), "k")
	var ost unix.Stat_t
	if err := unix.Stat(old, &ost); err != nil {
		t.Fatal(err)
	}
	h := start(t, keysConfig(keys, true))
	full := h.Snapshot()

	fillInotifyQueue(t, h, mnt, func() {
		mustAllow(t, cmd(t, "rm", "-r", old))
		if err := os.Mkdir(old, 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(old, "y.key"), "k")
	})
	var nst unix.Stat_t
	if err := unix.Stat(old, &nst); err != nil {
		t.Fatal(err)
	}
	t.Logf("inode of keys/old: %d, of the new one: %d", ost.Ino, nst.Ino)

	waitState(t, h, "the overflow counted", func(s fsmon.State) error {
		if s.Overflows[fsmon.OverflowInotify] < 1 {
			return fmt.Errorf("no inotify overflow counted")
		}
		return nil
	})
	// keys and the new old (sub is gone): two marks each, and y.key.
	waitState(t, h, "the tree walked again", counts(4, 2, full.InotifyWatches-1))
	if err := marksAgree(t, h); err != nil {
		t.Fatal(err)
	}
	mustDeny(t, cmd(t, "cat", filepath.Join(old, "y.key")))
	// The new directory is watched: what is made in it is covered.
	writeFile(t, filepath.Join(old, "z.key"), "k")
	waitState(t, h, "z.key marked", counts(4, 4, full.InotifyWatches-1))
	mustDeny(t, cmd(t, "cat", filepath.Join(old, "z.key")))
}

// fillInotifyQueue runs during while the engine's inotify queue is full,
// so that the kernel drops the events of what during does, for one
// IN_Q_OVERFLOW. The inotify loop handles each event under the placement lock (as it
// waits while a reload walks a large tree): holding it, the loop stops
// at its first event, and the kernel queue, fs.inotify.max_queued_events
// long, fills. Beyond what the loop read into its buffer before stopping
// (64 KiB, at most 2048 events), that many more creations fill it.
// The fillers are hard links made in watched, a directory the engine
// watches but marks in neither fanotify group (one above a filter's
// path): the cheapest creations there are, answered by no one.
func fillInotifyQueue(t *testing.T, h *harness, watched string, during func()) {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Fatal(err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if max > 1<<17 {
		testroot.Unavailable(t, "fs.inotify.max_queued_events is %d: too many files to overflow it", max)
	}
	filler := filepath.Join(watched, "filler")
	writeFile(t, filler, "")
	p := h.marks.Place()
	defer p.Done()
	for i := 0; i < max+4096; i++ {
		if err := os.Link(filler, filler+strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	during()
}
