package engine

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Priority says how the threads that answer permission events are
// scheduled.
type Priority uint8

const (
	// PriorityRealtime runs the permission loop at SCHED_FIFO 10 and the
	// watchdog at 11 (so that a loop that spins cannot starve it), or,
	// where real-time scheduling is refused, at nice -20. Under a flood
	// of openers every answer wakes every waiting opener, and a
	// responder at normal priority competes with hundreds of them for
	// the CPU: measured here, 300 threads opening a marked file made a
	// minimal C responder answer 2k opens a second at normal priority
	// and 76k–136k at SCHED_FIFO (docs/design/deny.md).
	PriorityRealtime Priority = iota
	// PriorityNormal leaves the threads as they are.
	PriorityNormal
)

// rtPriority is the SCHED_FIFO priority of the permission loop; the
// watchdog runs one above.
const rtPriority = 10

// raisePriority raises the calling thread (locked to its goroutine) and
// says what it got.
func raisePriority(p Priority, rt uint32) (string, error) {
	if p == PriorityNormal {
		return "normal", nil
	}
	attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_FIFO, Priority: rt}
	err := unix.SchedSetAttr(0, &attr, 0)
	if err == nil {
		return fmt.Sprintf("SCHED_FIFO %d", rt), nil
	}
	if nerr := unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), -20); nerr == nil {
		return "nice -20", fmt.Errorf("SCHED_FIFO refused: %w", err)
	}
	return "normal", fmt.Errorf("SCHED_FIFO refused: %w; nice -20 refused too", err)
}
