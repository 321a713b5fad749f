// Package otel exports the engine's events to OpenTelemetry: every event
// as a log record, and with OTEL_TRACES_EXPORTER set, every permission
// decision as a span. It is configured by the standard OTEL_* variables,
// with one departure from the SDK defaults: with none of them set nothing
// is enabled and nothing connects (see docs/opentelemetry.md).
//
// Handle never blocks: events go into a bounded queue, and what does not
// fit is counted. One goroutine turns queued events into records for the
// SDK's BatchProcessor, which exports them in batches with retries.
package otel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	otellog "go.opentelemetry.io/otel/log"
	sdklog "go.opentelemetry.io/otel/sdk/log"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/fsmon/fsmon_exporter/fsmon"
)

// ScopeName is the instrumentation scope of every record and span.
const ScopeName = "github.com/fsmon/fsmon_exporter"

// DefaultQueueSize is the events held between Handle and the SDK: about
// 2 MiB, a few seconds of a very busy node while a collector restarts.
const DefaultQueueSize = 8192

// defaultSDKQueue is the BatchProcessor's queue when
// OTEL_BLRP_MAX_QUEUE_SIZE is unset, the SDK's own default.
const defaultSDKQueue = 2048

// dropLogInterval bounds how often drops are logged.
const dropLogInterval = 10 * time.Second

// Options configures New.
type Options struct {
	// QueueSize is how many events wait for the SDK (DefaultQueueSize
	// when 0).
	QueueSize int
	// Logger receives diagnostics (slog.Default() when nil).
	Logger *slog.Logger
	// ServiceVersion becomes the resource's service.version.
	ServiceVersion string
}

// Stats are the events lost on the way to OpenTelemetry, by stage. A
// folded record of count n lost is n events lost.
type Stats struct {
	// Queue: events that found the queue full (or came after Shutdown).
	Queue uint64
	// Logs: events of the log records the SDK took but could not
	// deliver: failed exports after retries, records the collector
	// rejected (partial success), and what Shutdown's deadline left unsent.
	Logs uint64
	// Spans: events of the spans in failed exports, and of what Shutdown
	// left unsent.
	Spans uint64
}

// Exporter is a fsmon.Sink that sends events to OpenTelemetry.
type Exporter struct {
	log     *slog.Logger
	enabled bool

	queue    chan fsmon.Event
	queueCap int
	dropped  atomic.Uint64 // Stats.Queue
	closed   atomic.Bool

	lp       *sdklog.LoggerProvider
	logger   otellog.Logger
	ledger   *ledger
	sdkQueue int

	tp        *sdktrace.TracerProvider
	tracer    trace.Tracer
	spanCount *ledger
	spanQueue int

	abort     context.Context // cancelled when Shutdown's deadline passes
	abortFn   context.CancelFunc
	stop      chan struct{}
	done      chan struct{}
	stopOnce  sync.Once
	dropLogMu sync.Mutex
	lastDrops uint64
}

// New reads the OTEL_* environment and builds the exporter. When nothing
// is configured it returns an Exporter whose Enabled is false and whose
// Handle does nothing; no exporter is created and nothing connects.
func New(ctx context.Context, opts Options) (*Exporter, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	e := &Exporter{log: opts.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	e.abort, e.abortFn = context.WithCancel(context.Background())

	sig, err := envSignals()
	if err != nil {
		return nil, err
	}
	if sig.disabled {
		e.log.Info("OpenTelemetry export disabled by OTEL_SDK_DISABLED")
	}
	if !sig.logs && !sig.traces {
		close(e.done)
		return e, nil
	}

	res, err := newResource(ctx, opts.ServiceVersion)
	if err != nil {
		return nil, err
	}

	if sig.logs {
		exp, err := autoexport.NewLogExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("OpenTelemetry logs exporter: %w", err)
		}
		if autoexport.IsNoneLogExporter(exp) {
			sig.logs = false
		} else {
			e.ledger = newLedger()
			e.sdkQueue = envInt("OTEL_BLRP_MAX_QUEUE_SIZE", defaultSDKQueue)
			counted := &countingExporter{next: exp, ledger: e.ledger, abort: e.abort}
			// The queue size is passed explicitly (from the variable or
			// the SDK's default) because the back pressure in run
			// depends on knowing it.
			bp := sdklog.NewBatchProcessor(counted, sdklog.WithMaxQueueSize(e.sdkQueue))
			// Every record's keys are distinct by construction (one per
			// event field, labels from a map), so the SDK's search for
			// duplicates, about half of the CPU an exported record costs
			// (a map per record, measured with the export benchmark), is
			// work for nothing.
			e.lp = sdklog.NewLoggerProvider(sdklog.WithResource(res), sdklog.WithProcessor(bp), sdklog.WithAllowKeyDuplication())
			e.logger = e.lp.Logger(ScopeName, otellog.WithInstrumentationVersion(opts.ServiceVersion))
		}
	}
	if sig.traces {
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			if e.lp != nil {
				_ = e.lp.Shutdown(ctx)
			}
			return nil, fmt.Errorf("OpenTelemetry traces exporter: %w", err)
		}
		if autoexport.IsNoneSpanExporter(exp) {
			sig.traces = false
		} else {
			e.spanCount = newLedger()
			e.spanQueue = envInt("OTEL_BSP_MAX_QUEUE_SIZE", defaultSpanQueue)
			counted := &countingSpanExporter{next: exp, ledger: e.spanCount}
			// Not WithBlocking: it blocks on a context nobody can cancel.
			// The same back pressure as for logs keeps this queue from
			// overflowing, and abortably.
			bsp := sdktrace.NewBatchSpanProcessor(counted, sdktrace.WithMaxQueueSize(e.spanQueue))
			// Every decision is part of the audit trail: always sampled,
			// whatever OTEL_TRACES_SAMPLER says (an unsampled span would
			// also never leave the ledger's in-flight count).
			e.tp = sdktrace.NewTracerProvider(
				sdktrace.WithResource(res),
				sdktrace.WithSampler(sdktrace.AlwaysSample()),
				sdktrace.WithSpanProcessor(bsp),
			)
			e.tracer = e.tp.Tracer(ScopeName, trace.WithInstrumentationVersion(opts.ServiceVersion))
		}
	}
	if !sig.logs && !sig.traces {
		close(e.done)
		return e, nil
	}

	e.enabled = true
	e.queueCap = opts.QueueSize
	e.queue = make(chan fsmon.Event, opts.QueueSize)
	e.log.Info("OpenTelemetry export enabled", "logs", sig.logs, "traces", sig.traces, "queue", opts.QueueSize)
	if sig.logsUnasked {
		// Spans without records, with nothing said about records, is more
		// often a forgotten endpoint than a choice (OTEL_LOGS_EXPORTER=none
		// says it is one): the records need OTEL_EXPORTER_OTLP_ENDPOINT or
		// OTEL_LOGS_EXPORTER, docs/opentelemetry.md.
		e.log.Info("OpenTelemetry log records are off: set OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_LOGS_EXPORTER to send events as log records")
	}
	go e.run()
	go e.reportDrops()
	return e, nil
}

// newResource describes this agent: service.name=fsmon_exporter unless
// OTEL_SERVICE_NAME says otherwise, host.name, service.version, and
// OTEL_RESOURCE_ATTRIBUTES. WithFromEnv comes last so that the variables
// win over the defaults.
func newResource(ctx context.Context, version string) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{semconv.ServiceNameKey.String("fsmon_exporter")}
	if version != "" {
		attrs = append(attrs, semconv.ServiceVersionKey.String(version))
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attrs...),
		resource.WithHost(),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("OpenTelemetry resource: %w", err)
	}
	return res, nil
}

// Enabled tells whether logs or traces are configured.
func (e *Exporter) Enabled() bool { return e.enabled }

// Handle queues ev for export. It never blocks: with the queue full the
// event is counted as dropped.
func (e *Exporter) Handle(ev *fsmon.Event) {
	if !e.enabled {
		return
	}
	if e.closed.Load() {
		e.dropped.Add(events(ev))
		return
	}
	select {
	case e.queue <- *ev:
	default:
		e.dropped.Add(events(ev))
	}
}

// Pending is how many events wait in the queue.
func (e *Exporter) Pending() int {
	if !e.enabled {
		return 0
	}
	return len(e.queue)
}

// Stats returns the losses so far, by stage.
func (e *Exporter) Stats() Stats {
	s := Stats{Queue: e.dropped.Load()}
	if e.ledger != nil {
		s.Logs = e.ledger.lost()
	}
	if e.spanCount != nil {
		s.Spans = e.spanCount.lost()
	}
	return s
}

// Dropped is the total lost: Stats().Queue + Logs + Spans. An event whose
// log record and span are both lost after the queue counts twice; with
// only logs enabled (the usual case) it is exactly the events lost.
func (e *Exporter) Dropped() uint64 {
	s := e.Stats()
	return s.Queue + s.Logs + s.Spans
}

// run is the one goroutine that feeds the SDK.
func (e *Exporter) run() {
	defer close(e.done)
	buf := make([]attribute.KeyValue, 0, maxAttrs)
	for {
		select {
		case ev := <-e.queue:
			e.export(&ev, buf)
		case <-e.stop:
			// Drain what was queued before Shutdown; Handle no longer
			// adds to it.
			for {
				select {
				case ev := <-e.queue:
					e.export(&ev, buf)
				default:
					return
				}
			}
		}
	}
}

func (e *Exporter) export(ev *fsmon.Event, buf []attribute.KeyValue) {
	n := events(ev)
	if e.abort.Err() != nil {
		// Shutdown's deadline passed: what is left is lost.
		e.dropped.Add(n)
		return
	}
	now := time.Now()
	if e.logger != nil {
		if !e.waitForRoom(e.ledger, e.sdkQueue) {
			e.dropped.Add(n)
			return
		}
		var r otellog.Record
		record(&r, ev, now, buf)
		e.ledger.emit(n)
		e.logger.Emit(context.Background(), r)
	}
	if e.tracer != nil && ev.Decision > 0 {
		if !e.waitForRoom(e.spanCount, e.spanQueue) {
			// The record (if any) went out; only the span is lost.
			e.spanCount.emit(n)
			return
		}
		_, span := e.tracer.Start(context.Background(), "fsmon.permission",
			trace.WithTimestamp(ev.Time),
			trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithAttributes(attributes(ev, buf)...),
		)
		if ev.Kind == fsmon.KindDenied || ev.Answer == fsmon.AnswerDeny {
			span.SetStatus(codes.Error, "denied")
		}
		e.spanCount.emit(n)
		span.End(trace.WithTimestamp(ev.Time.Add(ev.Decision)))
	}
}

// events is the number of events ev stands for: Count when folded, else 1.
// Losses are counted in events, as fsmon_events_total counts them.
func events(ev *fsmon.Event) uint64 {
	if ev.Count > 1 {
		return uint64(ev.Count)
	}
	return 1
}

// waitForRoom holds the record back while the BatchProcessor's queue
// could be full, so that the processor never drops (it would drop the
// oldest record silently). Waiting here fills our own queue instead,
// where every drop is counted.
func (e *Exporter) waitForRoom(l *ledger, size int) bool {
	for l.inFlight() >= uint64(size) {
		select {
		case <-l.progress:
		case <-e.abort.Done():
			return false
		}
	}
	return true
}

// reportDrops logs drops at most once every dropLogInterval, with the
// count since the last line.
func (e *Exporter) reportDrops() {
	t := time.NewTicker(dropLogInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			e.logDrops()
		case <-e.done:
			return
		}
	}
}

func (e *Exporter) logDrops() {
	e.dropLogMu.Lock()
	defer e.dropLogMu.Unlock()
	s := e.Stats()
	total := s.Queue + s.Logs + s.Spans
	if total == e.lastDrops {
		return
	}
	e.log.Warn("OpenTelemetry export lost events",
		"dropped", total-e.lastDrops, "total", total,
		"queue_full", s.Queue, "logs_lost", s.Logs, "spans_lost", s.Spans)
	e.lastDrops = total
}

// Shutdown stops taking events, drains the queue into the SDK and flushes
// it, all within ctx's deadline. What the deadline leaves unsent is
// counted as dropped. It is safe to call more than once.
func (e *Exporter) Shutdown(ctx context.Context) error {
	if !e.enabled {
		return nil
	}
	var err error
	e.stopOnce.Do(func() {
		e.closed.Store(true)
		close(e.stop)
		// Past the deadline the drain and the retries give up at once.
		stopAbort := context.AfterFunc(ctx, e.abortFn)
		defer stopAbort()
		select {
		case <-e.done:
		case <-ctx.Done():
			e.abortFn()
			<-e.done // run returns promptly once aborted
		}
		if e.lp != nil {
			if lerr := e.lp.Shutdown(ctx); lerr != nil {
				err = errors.Join(err, fmt.Errorf("OpenTelemetry logs: %w", lerr))
			}
			e.ledger.settle()
		}
		if e.tp != nil {
			if terr := e.tp.Shutdown(ctx); terr != nil {
				err = errors.Join(err, fmt.Errorf("OpenTelemetry traces: %w", terr))
			}
			e.spanCount.settle()
		}
		e.abortFn()
		e.logDrops()
	})
	return err
}
