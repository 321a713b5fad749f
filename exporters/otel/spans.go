package otel

import (
	"context"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// defaultSpanQueue is the BatchSpanProcessor's queue when
// OTEL_BSP_MAX_QUEUE_SIZE is unset, the SDK's own default.
const defaultSpanQueue = 2048

// countingSpanExporter counts what the span exporter delivered and lost,
// with the same ledger and back pressure as the log records. The OTLP
// span exporters retry on their own (gRPC Unavailable, HTTP
// 429/502/503/504); spans are a companion of the log records, so they get
// no extra retry here.
type countingSpanExporter struct {
	next   sdktrace.SpanExporter
	ledger *ledger
}

func (c *countingSpanExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	all := tally{records: uint64(len(spans))}
	for _, s := range spans {
		all.events += spanEvents(s)
	}
	err := c.next.ExportSpans(ctx, spans)
	if err != nil {
		c.ledger.done(tally{}, all)
		return err
	}
	c.ledger.done(all, tally{})
	return nil
}

// spanEvents is the events a span stands for: its count attribute.
func spanEvents(s sdktrace.ReadOnlySpan) uint64 {
	for _, kv := range s.Attributes() {
		if kv.Key == keyCount {
			if c := kv.Value.AsInt64(); c > 1 {
				return uint64(c)
			}
			break
		}
	}
	return 1
}

func (c *countingSpanExporter) Shutdown(ctx context.Context) error { return c.next.Shutdown(ctx) }
