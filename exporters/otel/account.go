package otel

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdklog "go.opentelemetry.io/otel/sdk/log"
)

// ledger accounts for every log record handed to the SDK, so that the
// exporter can tell exactly how many were lost after its own queue:
//
//	emitted = exported + failed + in flight
//
// where in flight are records in the BatchProcessor's queue or in an
// Export call. The exporter never lets in flight reach the processor's
// queue size (it waits instead: back pressure into our own queue), so the
// processor's drop-oldest overflow, which it reports nowhere we can read,
// cannot happen. What is still in flight when Shutdown gives up is lost
// and counted then (settle).
//
// It keeps the sum twice: in records, which is what fills the
// processor's queue, and in events, which is what is reported lost: a
// folded record stands for count events (its count attribute).
type ledger struct {
	mu       sync.Mutex
	emitted  tally
	exported tally
	failed   tally
	settled  bool
	progress chan struct{} // signalled after every Export
}

// tally is a number of records and the number of events they stand for.
type tally struct{ records, events uint64 }

func (a *tally) add(b tally) { a.records += b.records; a.events += b.events }

func newLedger() *ledger {
	return &ledger{progress: make(chan struct{}, 1)}
}

// emit notes one record, standing for events events, handed to the SDK.
func (l *ledger) emit(events uint64) {
	l.mu.Lock()
	l.emitted.add(tally{1, events})
	l.mu.Unlock()
}

// inFlight is the records in the SDK.
func (l *ledger) inFlight() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.emitted.records - l.exported.records - l.failed.records
}

func (l *ledger) done(ok, lost tally) {
	l.mu.Lock()
	if !l.settled {
		l.exported.add(ok)
		l.failed.add(lost)
	}
	l.mu.Unlock()
	select {
	case l.progress <- struct{}{}:
	default:
	}
}

// lost is the events the SDK lost: failed exports, and after settle also
// what never left it.
func (l *ledger) lost() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed.events
}

// settle counts whatever is still in flight as lost and stops counting:
// called once the SDK has been shut down (or given up on), when nothing
// still in it will reach the collector in a way we would learn of.
func (l *ledger) settle() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.settled {
		return
	}
	l.failed = tally{l.emitted.records - l.exported.records, l.emitted.events - l.exported.events}
	l.settled = true
}

// countingExporter sits between the BatchProcessor and the real exporter:
// it counts what was exported and what was lost, and retries a failed
// export until the processor's export timeout (OTEL_BLRP_EXPORT_TIMEOUT,
// 30 s by default) runs out. The retry is needed because the OTLP/HTTP
// exporter does not retry a refused connection (a collector being
// restarted): without it every batch sent while the collector is down
// would be lost even though the queue could hold it.
type countingExporter struct {
	next   sdklog.Exporter
	ledger *ledger
	// abort ends retries at once when Shutdown's deadline has passed.
	abort context.Context
}

var _ sdklog.Exporter = (*countingExporter)(nil)

const (
	retryInitial = 100 * time.Millisecond
	retryMax     = 5 * time.Second
)

func (c *countingExporter) Export(ctx context.Context, records []sdklog.Record) error {
	n := uint64(len(records))
	if n == 0 {
		return c.next.Export(ctx, records)
	}
	all := tally{n, 0}
	for i := range records {
		all.events += recordEvents(&records[i])
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.abort, cancel)
	defer stop()

	backoff := retryInitial
	for {
		err := c.next.Export(ctx, records)
		if err == nil {
			c.ledger.done(all, tally{})
			return nil
		}
		if rejected, ok := partialSuccess(err); ok {
			// The collector took the request and refused some records:
			// a retry would duplicate the rest.
			c.ledger.done(partialTally(all, rejected))
			return err
		}
		if errors.Is(err, sdklog.ErrExporterShutdown) {
			c.ledger.done(tally{}, all)
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			c.ledger.done(tally{}, all)
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, retryMax)
	}
}

// recordEvents is the events a record stands for: its count attribute
// (record sets it on every record, 1 for an event not folded).
func recordEvents(r *sdklog.Record) uint64 {
	n := uint64(1)
	r.WalkAttributes(func(kv attribute.KeyValue) bool {
		if kv.Key != keyCount {
			return true
		}
		if c := kv.Value.AsInt64(); c > 1 {
			n = uint64(c)
		}
		return false
	})
	return n
}

// partialTally splits a batch of which the collector rejected rejected
// records. It says how many, not which: each record delivered stands for
// at least one event, so the events lost are counted as the most they can
// be, all but one per record delivered (exact when no record is folded).
func partialTally(all tally, rejected uint64) (ok, lost tally) {
	rejected = min(rejected, all.records)
	delivered := all.records - rejected
	lost = tally{rejected, all.events - delivered}
	return tally{delivered, delivered}, lost
}

func (c *countingExporter) Shutdown(ctx context.Context) error { return c.next.Shutdown(ctx) }

func (c *countingExporter) ForceFlush(ctx context.Context) error { return c.next.ForceFlush(ctx) }

// partialSuccess finds the OTLP exporters' PartialSuccess error in err's
// tree and returns how many records it rejected. The type lives in an
// internal package of each exporter, so it is recognised by name and read
// by reflection; both OTLP log exporters use the same shape.
func partialSuccess(err error) (uint64, bool) {
	var found *uint64
	var walk func(error) bool
	walk = func(e error) bool {
		if e == nil {
			return false
		}
		v := reflect.ValueOf(e)
		if v.Kind() == reflect.Pointer && !v.IsNil() {
			v = v.Elem()
		}
		if v.Kind() == reflect.Struct && v.Type().Name() == "PartialSuccess" {
			if f := v.FieldByName("RejectedItems"); f.IsValid() && f.CanInt() {
				n := uint64(max(f.Int(), 0))
				found = &n
				return true
			}
		}
		switch u := e.(type) {
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				if walk(x) {
					return true
				}
			}
		case interface{ Unwrap() error }:
			return walk(u.Unwrap())
		}
		return false
	}
	if walk(err) {
		return *found, true
	}
	return 0, false
}
