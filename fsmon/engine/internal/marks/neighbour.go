package marks

import (
	"errors"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
)

// Neighbours of protected files (docs/design/deny.md §9).
//
// A directory that holds a protected file has a permission mark for its
// children (permDirMask): a file created or renamed into place under a
// covered name is judged from its first open, and marked before its
// creator's answer (Adopt). That mark also asks about every other file
// of the directory (/etc/ld.so.cache beside /etc/shadow). After the
// first such open of a file no rule asks about, the loop gives the
// file's inode an ignore mask of the permission events in the permission
// group (Pass): its later opens no longer reach the daemon.
//
// What keeps that from opening a hole (all measured on 6.18):
//   - the ignore mask does not survive modification: the kernel clears it
//     at the file's next write or truncate, and refuses to place it while
//     anyone has the file open for writing. New content written through
//     write(2) is never behind an ignore mask.
//   - a file whose ctime is recent (written, renamed, linked or chmod'ed
//     less than passAge ago) is not passed: the temporary file of passwd,
//     sed -i or a package manager, written and renamed over a protected
//     file moments later, has no ignore mask when it arrives, so the
//     first open of the protected name after the rename is judged.
//   - a file with more than one link is not passed (one of them may be a
//     covered name).
//   - an ignore mask wins over the inode's own mark: whatever places a
//     permission mark on a file (a walk, a tree event for a file renamed
//     or linked under a covered name, a reload that covers it) removes
//     the ignore mask (Unpass) once any was placed.
//   - placement and passing race: a pass is placed only if no placement
//     ran between the decision's look-up and the pass (seq, odd while
//     placement is held), else it is taken back.

// passMask is what a pass ignores: the opens the directory's mark asks
// about.
const passMask = fanotify.OpenPerm | fanotify.OpenExecPerm

// DefaultPassAge is how long a file must have been left unchanged
// (ctime) before its opens are let past the daemon.
const DefaultPassAge = 5 * time.Second

// PlaceSeq is the placement sequence: odd while placement is held, and
// moved by every placement and adoption. A decision reads it before its
// look-ups and hands it to Pass.
func (m *Marks) PlaceSeq() uint64 { return m.seq.Load() }

// Neighbour reports whether the file called name in the directory dir
// (as the kernel names it) sits in a directory the tables mark and no
// rule that covers it asks about its opens: its opens reached the daemon
// through its directory's mark only.
func (m *Marks) Neighbour(dir RealKey, name string) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	de := m.tables.dirsByReal[dir]
	if de == nil || de.perm == 0 {
		return false
	}
	for _, rr := range de.rels {
		if rr.rel.Covers() && rr.rule.WantsOpens() && rr.rule.MatchName(rr.rel, name) {
			return false
		}
	}
	return true
}

// Passable reports whether a file with this fstat may get a pass at now:
// a regular file with one link, unchanged for passAge.
func (m *Marks) Passable(st *unix.Stat_t, now time.Time) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		return false
	}
	changed := time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	return now.Sub(changed) >= m.passAge
}

// Pass lets later opens of the file of the event fd fd (inode id) past
// the daemon: an ignore mask in the permission group. seq is PlaceSeq
// as read before the decision's look-ups. It runs on the permission loop
// after the answer (the event fd is still open): the kernel itself
// refuses the mask while the file is open for writing, so nothing
// written after the answer can end up behind it.
func (m *Marks) Pass(fd int32, id DevIno, seq uint64) {
	if seq&1 != 0 || m.passAge < 0 {
		return // placement held: its marks may be for this very file
	}
	if err := m.perm.Pass(fd, passMask); err != nil {
		if m.passErr.CompareAndSwap(false, true) {
			m.log.Debug("letting opens of a file no rule asks about past the daemon", "err", err)
		}
		return
	}
	m.passed.Add(1)
	m.mu.RLock()
	f := m.tables.files[id]
	m.mu.RUnlock()
	if m.seq.Load() == seq && (f == nil || !wantsOpens(f.rules)) {
		return
	}
	// Placement ran meanwhile, or the file is covered now: take it back.
	if err := m.perm.Unpass(int(fd), passMask); err != nil {
		m.log.Error("taking back the pass of a file that is covered now", "err", err)
	}
}

// Passes is how many passes were placed.
func (m *Marks) Passes() uint64 { return m.passed.Load() }

// unpass removes a pass from the file fd (O_PATH) refers to, which is
// getting a permission mark of its own; nothing to do while no pass was
// ever placed (a start-up walk).
func (m *Marks) unpass(fd int, p string) error {
	if m.passed.Load() == 0 {
		return nil
	}
	return m.perm.Unpass(fd, passMask)
}

// errPassOff stands for a kernel that refuses every pass (the
// mutation that places none, tools/mutate/mutations/perf19.txt).
var errPassOff = errors.New("passes off")

func wantsOpens(rules []Rule) bool {
	for _, r := range rules {
		if r.WantsOpens() {
			return true
		}
	}
	return false
}
