package marks

import (
	"bufio"
	"bytes"
	"os"
	"path"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/fsmon/fsmon_exporter/fsmon"
	"github.com/fsmon/fsmon_exporter/fsmon/internal/fanotify"
	"github.com/fsmon/fsmon_exporter/fsmon/policy"
)

// Content guards and arming (docs/design/deny.md §2, §3).
//
// The kernel judges opens; what a descriptor does after its open is
// judged only by content events. A file that a protect-mode block filter
// covers gets, beside its open events, the content guard in its inode
// mark: FAN_PRE_ACCESS where the file system has pre-content events
// (every read, write, mmap and truncate, through any descriptor opened
// after the mark, or after the file system was armed), else
// FAN_ACCESS_PERM (reads only). Directory marks never get one: with
// FAN_EVENT_ON_CHILD every read of every file in /etc would wait for the
// daemon. Files that only monitor or report_access filters cover get
// nothing extra, and nor do block filters in monitor and learn mode:
// those modes never change what a process may do, and a per-read round
// trip (9 to 36 µs each, deny.md §3) would tax every reader of the file
// for a report of reads that the report of the open already gives.
//
// Whether a descriptor ever produces content events is decided at its
// open: a descriptor opened before its file's mark never does, unless
// the file system was armed then. So every file system that holds files
// with a guard is armed (Arm: an ignore-only file system mark in a group
// of its own, which never gets an event) before the walk that marks
// them, and disarmed when no such file is left on it.

// guardsContent reports whether r's files get the content guard.
func guardsContent(r Rule) bool { return r.Blocks() && r.Mode == fsmon.ModeProtect }

// guardingContent reports whether any of rules guards content.
func guardingContent(rules []Rule) bool {
	for _, r := range rules {
		if guardsContent(r) {
			return true
		}
	}
	return false
}

// coversGuarded reports whether a directory with these relations holds
// files whose content is guarded: its file system is to be armed.
func coversGuarded(rels []ruleRel) bool {
	for _, rr := range rels {
		if rr.rel.Covers() && guardsContent(rr.rule) {
			return true
		}
	}
	return false
}

// armedFS is a file system armed in the arming group: an O_PATH fd on
// it (to name it when disarming) and the guard the arming took; fd -1
// for one whose arming failed, which is not tried again (nor logged
// again) while it is needed.
type armedFS struct {
	fd    int
	guard fanotify.Guard
}

// arm arms the file system of fd (st_dev dev) unless it is armed
// already. It runs under the placement lock, before the marks of the
// files it is for.
func (m *Marks) arm(fd int, dev uint64) {
	if m.armGroup == nil {
		return
	}
	m.armMu.Lock()
	defer m.armMu.Unlock()
	if _, ok := m.armed[dev]; ok {
		return
	}
	own, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	gd := fanotify.GuardNone
	if err == nil {
		if gd, err = m.armGroup.Arm(own); err != nil {
			unix.Close(own)
		}
	}
	if err != nil {
		m.armed[dev] = armedFS{fd: -1}
		m.log.Error("arming a file system failed: descriptors opened on it before a protected file's mark stay unjudged", "dev", devString(dev), "err", err)
		return
	}
	m.armed[dev] = armedFS{fd: own, guard: gd}
	m.log.Debug("file system armed", "dev", devString(dev), "guard", gd.String())
}

// disarmUnneeded disarms the file systems that no file or directory of
// the tables in force needs armed any more (after a reload, a container
// gone).
func (m *Marks) disarmUnneeded() {
	if m.armGroup == nil {
		return
	}
	m.mu.RLock()
	need := m.tables.guardedDevs()
	m.mu.RUnlock()
	m.armMu.Lock()
	defer m.armMu.Unlock()
	for dev, a := range m.armed {
		if _, ok := need[dev]; ok {
			continue
		}
		if a.fd >= 0 {
			if err := m.armGroup.Disarm(a.fd, a.guard); err != nil {
				m.log.Debug("disarming a file system", "dev", devString(dev), "err", err)
			}
			unix.Close(a.fd)
		}
		delete(m.armed, dev)
		m.log.Debug("file system disarmed", "dev", devString(dev))
	}
}

// closeArmed closes the fds kept on armed file systems (the engine
// closes the arming group itself, which removes its marks).
func (m *Marks) closeArmed() {
	m.armMu.Lock()
	defer m.armMu.Unlock()
	for dev, a := range m.armed {
		if a.fd >= 0 {
			unix.Close(a.fd)
		}
		delete(m.armed, dev)
	}
}

// Armed is the number of file systems armed (file system marks in the
// arming group).
func (m *Marks) Armed() int {
	m.armMu.Lock()
	defer m.armMu.Unlock()
	n := 0
	for _, a := range m.armed {
		if a.fd >= 0 {
			n++
		}
	}
	return n
}

// guardedDevs are the file systems of the set's guarded files and of
// the directories that cover guarded files.
func (t *Tables) guardedDevs() map[uint64]struct{} {
	out := map[uint64]struct{}{}
	for _, d := range t.dirs {
		if d.goneAt.IsZero() && coversGuarded(d.rels) {
			out[d.id.Dev] = struct{}{}
		}
	}
	for _, f := range t.files {
		if guardingContent(f.rules) {
			out[f.id.Dev] = struct{}{}
		}
	}
	return out
}

// markGuarded adds perm and the content guard to the inode mark of the
// file fd (st_dev dev) refers to, and says which guard it got.
func (m *Marks) markGuarded(fd int, dev uint64, perm fanotify.Mask, p string) (fanotify.Guard, error) {
	gd, err := m.perm.AddGuarded(fd, perm)
	if err != nil {
		return gd, err
	}
	if gd != fanotify.GuardPreContent {
		m.noPreContent(dev, p)
	}
	return gd, nil
}

// noPreContent says once per file system that its protected files have
// only the read-only guard. The log line is written by a goroutine of
// its own: this may run before an opener's answer (Adopt), and finding
// the mount reads /proc/self/mountinfo.
func (m *Marks) noPreContent(dev uint64, p string) {
	m.armMu.Lock()
	_, told := m.toldNoPre[dev]
	if !told {
		m.toldNoPre[dev] = struct{}{}
	}
	m.armMu.Unlock()
	if told {
		return
	}
	preClass := m.perm.Class() == fanotify.ClassPreContent
	m.warns.Add(1)
	go func() {
		defer m.warns.Done()
		fsType, mnt := mountOf(dev)
		why := "the file system has no pre-content events"
		if !preClass {
			why = "the kernel has no pre-content events (Linux before 6.14)"
		}
		m.log.Warn("protected files without pre-content events: "+why+"; reads are judged (FAN_ACCESS_PERM), but descriptors taken from allowed processes (pidfd_getfd, SCM_RIGHTS) or opened before a file's mark can still write, mmap and truncate it",
			"fs_type", fsType, "mount", mnt, "dev", devString(dev), "file", p)
	}()
}

// mountOf finds the type and a mount point of the file system dev in
// the daemon's mount table; "" for what it does not show (a container's
// file system outside the daemon's mount namespace).
func mountOf(dev uint64) (fsType, mountPoint string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", ""
	}
	defer f.Close()
	want := []byte(devString(dev))
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// 36 35 98:0 /root /mnt opts... - type source opts
		fields := bytes.Fields(sc.Bytes())
		if len(fields) < 5 || !bytes.Equal(fields[2], want) {
			continue
		}
		for i, x := range fields {
			if string(x) == "-" && i+1 < len(fields) {
				return string(fields[i+1]), string(fields[4])
			}
		}
		return "", string(fields[4])
	}
	return "", ""
}

func devString(dev uint64) string {
	return strconv.FormatUint(uint64(unix.Major(dev)), 10) + ":" + strconv.FormatUint(uint64(unix.Minor(dev)), 10)
}

// WithoutPreContent counts, per (profile, filter) of a guarding rule,
// the files in force whose mark lacks pre-content events (read-only
// guard, or none placed).
func (m *Marks) WithoutPreContent() map[FilterKey]int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := map[FilterKey]int{}
	for _, f := range m.tables.files {
		if f.guard == fanotify.GuardPreContent {
			continue
		}
		for _, r := range f.rules {
			if guardsContent(r) {
				out[FilterKey{r.Profile.Name, r.Name}]++
			}
		}
	}
	return out
}

// FilterKey names a filter of a profile.
type FilterKey struct{ Profile, Filter string }

// armRoots arms, before the walk, the file system of each rule that
// guards content where the rule's walk starts (the nearest directory of
// its literal prefix that exists): the walk's window, between a file's
// place being known and its mark, then judges descriptors opened in it.
// File systems the walk reaches below (mount points) are armed as it
// visits them (visitDir), before their files are marked.
func (w *walker) armRoots(rules []*policy.Rule) {
	if w.m.armGroup == nil {
		return
	}
	for _, r := range rules {
		if !guardsContent(Rule{w.g, r}) {
			continue
		}
		for p := r.Root(); ; p = path.Dir(p) {
			fd, err := w.openIn(p, unix.O_DIRECTORY, 0)
			if err == nil {
				var st unix.Stat_t
				if unix.Fstat(fd, &st) == nil {
					w.m.arm(fd, st.Dev)
				}
				unix.Close(fd)
				break
			}
			if p == "/" {
				break
			}
		}
	}
}

// WaitWarnings waits for the log lines noPreContent's goroutines write:
// for Close, and for tests that count them.
func (m *Marks) WaitWarnings() { m.warns.Wait() }
