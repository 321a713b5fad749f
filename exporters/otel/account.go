package otel

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"time"

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
type ledger struct {
	mu       sync.Mutex
	emitted  uint64
	exported uint64
	failed   uint64
	settled  bool
	progress chan struct{} // signalled after every Export
}

func newLedger() *ledger {
	return &ledger{progress: make(chan struct{}, 1)}
}

func (l *ledger) emit() {
	l.mu.Lock()
	l.emitted++
	l.mu.Unlock()
}

func (l *ledger) inFlight() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.emitted - l.exported - l.failed
}

func (l *ledger) done(ok, lost uint64) {
	l.mu.Lock()
	if !l.settled {
		l.exported += ok
		l.failed += lost
	}
	l.mu.Unlock()
	select {
	case l.progress <- struct{}{}:
	default:
	}
}

// lost is what the SDK lost: failed exports, and after settle also what
// never left it.
func (l *ledger) lost() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failed
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
	l.failed += l.emitted - l.exported - l.failed
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.abort, cancel)
	defer stop()

	backoff := retryInitial
	for {
		err := c.next.Export(ctx, records)
		if err == nil {
			c.ledger.done(n, 0)
			return nil
		}
		if rejected, ok := partialSuccess(err); ok {
			// The collector took the request and refused some records:
			// a retry would duplicate the rest.
			rejected = min(rejected, n)
			c.ledger.done(n-rejected, rejected)
			return err
		}
		if errors.Is(err, sdklog.ErrExporterShutdown) {
			c.ledger.done(0, n)
			return err
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			c.ledger.done(0, n)
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
		backoff = min(2*backoff, retryMax)
	}
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
