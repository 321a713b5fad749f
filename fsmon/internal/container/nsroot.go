package container

import (
	"fmt"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// OpenNSRoot opens (O_PATH) the root of PID's mount namespace, not PID's
// own root: a container's init can chroot into a decoy directory, and
// its /proc/PID/root is then the decoy, while the processes the runtime
// starts in the container later (exec) get the namespace's root. A
// thread of its own enters the namespace (setns(2) sets the thread's
// root and working directory to the namespace's root, following what is
// mounted over it, as pivot_root leaves it) and opens "/". The thread
// is never handed back to the Go scheduler: it ends with its goroutine,
// so no other goroutine runs in the container's namespace.
func OpenNSRoot(procRoot string, pid int32) (int, error) {
	return OpenInNS(procRoot, pid, "/")
}

// OpenInNS opens (O_PATH) the directory at path as PID's mount
// namespace resolves it from its root: for a container that its runtime
// is still setting up (an OCI hook's), the root file system at the
// bundle's root path, with the container's mounts below it, which
// pivot_root then makes the root.
func OpenInNS(procRoot string, pid int32, path string) (int, error) {
	p := procRoot + "/" + strconv.Itoa(int(pid)) + "/ns/mnt"
	nsfd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("opening %s: %w", p, err)
	}
	defer unix.Close(nsfd)
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	enter := func() {
		runtime.LockOSThread() // no Unlock: the thread goes with the goroutine
		// setns of a mount namespace needs a thread that shares its
		// root and working directory with no other.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			ch <- result{-1, fmt.Errorf("unshare(CLONE_FS): %w", err)}
			return
		}
		if err := unix.Setns(nsfd, unix.CLONE_NEWNS); err != nil {
			ch <- result{-1, fmt.Errorf("entering the mount namespace of %d: %w", pid, err)}
			return
		}
		fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			err = fmt.Errorf("opening %s in the mount namespace of %d: %w", path, pid, err)
		}
		ch <- result{fd, err}
	}
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != unix.Getpid() {
			enter()
			return
		}
		// The main thread is never ended by the runtime, only parked:
		// entered, it would stay in the container's namespace, and
		// /proc/self/ns/mnt, which is the main thread's, would say the
		// daemon is there. Held here, it runs nothing else, so the
		// goroutine below gets another thread.
		done := make(chan struct{})
		go func() { defer close(done); enter() }()
		<-done
		runtime.UnlockOSThread()
	}()
	r := <-ch
	return r.fd, r.err
}
