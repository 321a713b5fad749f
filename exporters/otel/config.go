package otel

import (
	"os"
	"strconv"
	"strings"
)

// signals is what the environment asks for. The rule, documented in
// docs/opentelemetry.md, departs from the SDK defaults on purpose: the
// SDK and autoexport pick the OTLP exporter towards localhost when
// nothing is set, but a node agent installed with no OpenTelemetry
// configuration must not try to connect anywhere.
type signals struct {
	logs, traces bool
	// logsDefault is set when logs are on only because an OTLP endpoint
	// was named: OTEL_LOGS_EXPORTER is unset and autoexport's default
	// (otlp) applies.
	logsDefault bool
	disabled    bool // OTEL_SDK_DISABLED=true
}

// envSignals reads the rule from the environment:
//   - OTEL_SDK_DISABLED=true: nothing.
//   - logs: OTEL_LOGS_EXPORTER names an exporter other than none; or it
//     is unset and OTEL_EXPORTER_OTLP_ENDPOINT or
//     OTEL_EXPORTER_OTLP_LOGS_ENDPOINT is set (then otlp).
//   - traces: only when OTEL_TRACES_EXPORTER names an exporter other than
//     none; an endpoint alone does not turn spans on.
func envSignals() signals {
	if b, err := strconv.ParseBool(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED"))); err == nil && b {
		return signals{disabled: true}
	}
	var s signals
	switch v := strings.TrimSpace(os.Getenv("OTEL_LOGS_EXPORTER")); v {
	case "":
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") != "" {
			s.logs, s.logsDefault = true, true
		}
	case "none":
	default:
		s.logs = true
	}
	switch v := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); v {
	case "", "none":
	default:
		s.traces = true
	}
	return s
}

// envInt reads a positive integer variable, or def when unset or invalid.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(strings.TrimSpace(os.Getenv(name))); err == nil && n > 0 {
		return n
	}
	return def
}
