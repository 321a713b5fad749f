package jsonl

import (
	"context"
	"sync/atomic"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// Queue hands events to a Writer on a goroutine of its own, through a
// bounded queue. Whoever reads stdout may stall (a full pipe, a paused
// log shipper); the engine's report goroutine, which also counts the
// events for the metrics, must not stall with it. What does not fit is
// dropped and counted.
type Queue struct {
	w       *Writer
	ch      chan fsmon.Event
	done    chan struct{}
	dropped atomic.Uint64
	closed  atomic.Bool
}

// NewQueue starts a Queue of size events in front of w.
func NewQueue(w *Writer, size int) *Queue {
	if size <= 0 {
		size = 8192
	}
	q := &Queue{w: w, ch: make(chan fsmon.Event, size), done: make(chan struct{})}
	go func() {
		defer close(q.done)
		for ev := range q.ch {
			if !q.w.write(&ev) {
				q.dropped.Add(events(&ev))
			}
		}
	}()
	return q
}

// Handle queues ev without ever blocking.
func (q *Queue) Handle(ev *fsmon.Event) {
	if q.closed.Load() {
		q.dropped.Add(events(ev))
		return
	}
	select {
	case q.ch <- *ev:
	default:
		q.dropped.Add(events(ev))
	}
}

// Dropped is the number of events lost (a folded one of count n is n):
// they found the queue full, came after Close, or could not be written (a
// closed stdout).
func (q *Queue) Dropped() uint64 { return q.dropped.Load() }

// Close writes what is queued, until ctx ends. Events handed over after
// Close are dropped and counted.
func (q *Queue) Close(ctx context.Context) error {
	if q.closed.Swap(true) {
		return nil
	}
	close(q.ch)
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		// What is still queued is lost. Taken from the queue here, so
		// that the writer goroutine (stuck in a Write) cannot write it
		// too: each event is either written or counted.
		for ev := range q.ch {
			q.dropped.Add(events(&ev))
		}
		return ctx.Err()
	}
}

// events is the number of events ev stands for: Count when folded, else
// 1. Losses are counted in events, as fsmon_events_total counts them.
func events(ev *fsmon.Event) uint64 {
	if ev.Count > 1 {
		return uint64(ev.Count)
	}
	return 1
}
