package fsmon

import (
	"math"
	"sync/atomic"
	"time"
)

// DecisionBuckets are the upper bounds, in seconds, of the permission
// decision histogram: a decision normally takes microseconds, a slow one
// tens of milliseconds, and the deadline caps it.
var DecisionBuckets = []float64{
	1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4,
	1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1,
}

// Histogram is a lock-free histogram the permission loop can observe into
// without allocation; the collector turns a snapshot into a const
// histogram at scrape time, so the engine needs no Prometheus import.
type Histogram struct {
	counts [20]atomic.Uint64 // one per bucket, the last is +Inf
	sumNs  atomic.Uint64
	count  atomic.Uint64
}

// Observe records one duration.
func (h *Histogram) Observe(d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(DecisionBuckets) && s > DecisionBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(uint64(d))
	h.count.Add(1)
}

// HistogramSnapshot is a histogram in Prometheus' shape: cumulative counts
// per upper bound.
type HistogramSnapshot struct {
	Count   uint64
	Sum     float64            // seconds
	Buckets map[float64]uint64 // upper bound (seconds) -> cumulative count
}

// Snapshot returns the cumulative counts.
func (h *Histogram) Snapshot() HistogramSnapshot {
	s := HistogramSnapshot{Buckets: make(map[float64]uint64, len(DecisionBuckets))}
	var cum uint64
	for i, ub := range DecisionBuckets {
		cum += h.counts[i].Load()
		s.Buckets[ub] = cum
	}
	cum += h.counts[len(DecisionBuckets)].Load()
	s.Count = cum
	s.Sum = float64(h.sumNs.Load()) / float64(time.Second)
	if math.IsNaN(s.Sum) {
		s.Sum = 0
	}
	return s
}
