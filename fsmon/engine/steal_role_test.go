package engine

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// stealEnv, set, makes the test binary one of the two processes of the
// new-file race (docs/design/deny.md §2) instead of the tests:
// "writer DIR" or "attacker DIR STEAL".
const stealEnv = "FSMON_TEST_STEAL"

const stealSecret = "SECRET"

// runSteal is a process of the race. The writer, called "fsmonwriter"
// (the name its allow entry names), creates DIR/sN for each N read from
// stdin, writes the secret, closes it and prints "wrote N". The attacker
// watches DIR with inotify; at each IN_CREATE of sN it links it to
// STEAL/sN and opens the link at once, prints "opened N", and when told
// "read N" reads it: "N leak", "N open-denied", "N read-denied" or
// "N empty".
func runSteal(spec string) int {
	var role, dir, steal string
	fmt.Sscan(spec, &role, &dir, &steal)
	in := bufio.NewScanner(os.Stdin)
	switch role {
	case "writer":
		name := []byte("fsmonwriter\x00")
		unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(&name[0])), 0, 0, 0)
		fmt.Println("ready")
		for in.Scan() {
			n := in.Text()
			fd, err := unix.Open(filepath.Join(dir, "s"+n), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err != nil {
				fmt.Println("create", n, err)
				continue
			}
			unix.Write(fd, []byte(stealSecret))
			unix.Close(fd)
			fmt.Println("wrote", n)
		}
	case "attacker":
		ino, err := unix.InotifyInit1(unix.IN_CLOEXEC)
		if err != nil {
			fmt.Println("inotify", err)
			return 1
		}
		if _, err := unix.InotifyAddWatch(ino, dir, unix.IN_CREATE); err != nil {
			fmt.Println("inotify", err)
			return 1
		}
		fmt.Println("ready")
		buf := make([]byte, 4096)
		fds := map[string]int{}
		errs := map[string]error{}
		for {
			n, err := unix.Read(ino, buf)
			if err != nil {
				return 1
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				nameB := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				off += unix.SizeofInotifyEvent + int(ev.Len)
				name := string(nameB[:clen(nameB)])
				link := filepath.Join(steal, name)
				if err := unix.Link(filepath.Join(dir, name), link); err != nil {
					errs[name] = err
				} else if fd, err := unix.Open(link, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
					errs[name] = err
				} else {
					fds[name] = fd
				}
				k := name[1:]
				fmt.Println("opened", k)
				if !in.Scan() {
					return 0
				}
				// "read N"
				fd, ok := fds[name]
				if !ok {
					fmt.Println(k, "open-denied", errs[name])
					continue
				}
				b := make([]byte, 64)
				m, err := unix.Pread(fd, b, 0)
				unix.Close(fd)
				switch {
				case err != nil:
					fmt.Println(k, "read-denied", err)
				case string(b[:m]) == stealSecret:
					fmt.Println(k, "leak")
				default:
					fmt.Println(k, "empty", strconv.Quote(string(b[:m])))
				}
			}
		}
	}
	return 0
}

func clen(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}
