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
	err := c.next.ExportSpans(ctx, spans)
	if err != nil {
		c.ledger.done(0, uint64(len(spans)))
		return err
	}
	c.ledger.done(uint64(len(spans)), 0)
	return nil
}

func (c *countingSpanExporter) Shutdown(ctx context.Context) error { return c.next.Shutdown(ctx) }
