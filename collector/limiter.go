package collector

import (
	"strings"
	"sync"
	"unicode/utf8"
)

// limiter admits up to max distinct label values and maps every value
// past that to "other". It holds one map entry per admitted value, so its
// memory is bounded by max however many distinct values it is shown.
// It is safe for concurrent use: the cap holds even when several
// goroutines race to admit the last free slot.
type limiter struct {
	max      int
	reserved map[string]struct{} // always admitted, never counted

	mu   sync.RWMutex
	seen map[string]struct{}
}

func newLimiter(max int, reserved ...string) *limiter {
	if max < 0 {
		max = 0
	}
	l := &limiter{max: max, reserved: map[string]struct{}{}, seen: map[string]struct{}{}}
	for _, r := range reserved {
		l.reserved[r] = struct{}{}
	}
	return l
}

// value returns v if it is admitted (or can be), else "other". An empty v
// is "unknown"; invalid UTF-8 is repaired, since the client library
// rejects it and a container runtime is not bound to send valid names.
func (l *limiter) value(v string) string {
	if v == "" {
		return labelUnknown
	}
	if !utf8.ValidString(v) {
		v = strings.ToValidUTF8(v, "\uFFFD")
	}
	if _, ok := l.reserved[v]; ok {
		return v
	}
	l.mu.RLock()
	_, ok := l.seen[v]
	full := len(l.seen) >= l.max
	l.mu.RUnlock()
	if ok {
		return v
	}
	if full {
		return labelOther
	}
	return l.admit(v)
}

// admit takes the write lock and admits v if a slot is still free. It
// looks again: between value's look under the read lock and this lock,
// another goroutine may have admitted v or taken the last free slot.
func (l *limiter) admit(v string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[v]; ok {
		return v
	}
	if len(l.seen) >= l.max {
		return labelOther
	}
	l.seen[v] = struct{}{}
	return v
}

// size is the number of admitted values, for tests.
func (l *limiter) size() int {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return len(l.seen)
}
