package statefile

import (
	"sync"
	"time"
)

// Poller writes a state file that changes at every event (the learned
// set): Changed says there is something new; the poller then asks
// encode for the content (nil: nothing to write) and writes it, at most
// once per interval, so that such a state costs one write an interval,
// not one an event. Writer is for a state handed over whole.
type Poller struct {
	dir, name string
	encode    func() []byte
	interval  time.Duration
	err       func(error)
	ready     chan struct{}
	mu        sync.Mutex
	lastErr   string
}

// NewPoller writes the file name in dir; onErr hears of failed writes
// (one call per failure that differs from the last one).
func NewPoller(dir, name string, interval time.Duration, encode func() []byte, onErr func(error)) *Poller {
	return &Poller{dir: dir, name: name, encode: encode, interval: interval, err: onErr, ready: make(chan struct{}, 1)}
}

// Changed says the state changed; it never blocks.
func (w *Poller) Changed() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// Run writes what changes until stop closes, then writes what is still
// pending and returns. encode is asked at every write, so it must
// return nil when nothing changed since it last returned content.
func (w *Poller) Run(stop <-chan struct{}) {
	var hold <-chan time.Time
	pending := false
	for {
		select {
		case <-w.ready:
			if hold == nil {
				w.Flush()
				if w.interval > 0 {
					hold = time.After(w.interval)
				}
			} else {
				pending = true
			}
		case <-hold:
			hold = nil
			if pending {
				pending = false
				w.Flush()
				hold = time.After(w.interval)
			}
		case <-stop:
			// encode says whether anything is left to write.
			w.Flush()
			return
		}
	}
}

// Flush writes the current state now, from the caller's goroutine.
func (w *Poller) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.encode()
	if b == nil {
		return
	}
	err := WriteBytes(w.dir, w.name, b)
	if err == nil {
		w.lastErr = ""
		return
	}
	if err.Error() != w.lastErr && w.err != nil {
		w.err(err)
	}
	w.lastErr = err.Error()
}
