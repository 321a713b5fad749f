package otel

import (
	"errors"
	"fmt"
	"os"
	"slices"
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
	// logsUnasked is set when nothing asks for log records either way:
	// OTEL_LOGS_EXPORTER and the endpoints are unset (not "none").
	logsUnasked bool
	disabled    bool // OTEL_SDK_DISABLED=true
}

// ErrConfig is a wrong OTEL_* variable; the error names the variable and
// its value.
var ErrConfig = errors.New("invalid OpenTelemetry configuration")

// exporterNames are the values OTEL_LOGS_EXPORTER and
// OTEL_TRACES_EXPORTER may take: those autoexport registers for logs and
// spans (its "prometheus" is for metrics only). Lists ("otlp,console")
// are not supported by autoexport, and are refused here for that reason.
var exporterNames = []string{"otlp", "console", "none"}

// protocols are the values of OTEL_EXPORTER_OTLP_PROTOCOL and its
// per-signal forms that autoexport supports (not http/json).
var protocols = []string{"http/protobuf", "grpc"}

// envSignals reads the rule from the environment:
//   - OTEL_SDK_DISABLED=true: nothing.
//   - logs: OTEL_LOGS_EXPORTER names an exporter other than none; or it
//     is unset and OTEL_EXPORTER_OTLP_ENDPOINT or
//     OTEL_EXPORTER_OTLP_LOGS_ENDPOINT is set (then otlp).
//   - traces: only when OTEL_TRACES_EXPORTER names an exporter other than
//     none; an endpoint alone does not turn spans on.
//
// An exporter name or OTLP protocol that is not supported is an error
// that names the variable and its value, rather than autoexport's
// "unknown exporter or metrics producer", which names neither. Values are
// taken as autoexport takes them, untrimmed.
func envSignals() (signals, error) {
	if b, err := strconv.ParseBool(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED"))); err == nil && b {
		return signals{disabled: true}, nil
	}
	var s signals
	logs, traces := os.Getenv("OTEL_LOGS_EXPORTER"), os.Getenv("OTEL_TRACES_EXPORTER")
	for _, v := range [][2]string{{"OTEL_LOGS_EXPORTER", logs}, {"OTEL_TRACES_EXPORTER", traces}} {
		if v[1] != "" && !slices.Contains(exporterNames, v[1]) {
			return s, fmt.Errorf("%w: %s=%q: unknown exporter; want one of %s", ErrConfig, v[0], v[1], strings.Join(exporterNames, ", "))
		}
	}
	switch logs {
	case "":
		if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") != "" {
			s.logs, s.logsDefault = true, true
		} else {
			s.logsUnasked = true
		}
	case "none":
	default:
		s.logs = true
	}
	s.traces = traces != "" && traces != "none"
	// The protocol of each signal that goes over OTLP: the per-signal
	// variable wins, as in autoexport.
	for _, sig := range []struct {
		on       bool
		exporter string
		name     string
	}{{s.logs, logs, "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"}, {s.traces, traces, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"}} {
		if !sig.on || (sig.exporter != "" && sig.exporter != "otlp") {
			continue
		}
		name, v := sig.name, os.Getenv(sig.name)
		if v == "" {
			name, v = "OTEL_EXPORTER_OTLP_PROTOCOL", os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
		}
		if v != "" && !slices.Contains(protocols, v) {
			return s, fmt.Errorf("%w: %s=%q: unsupported OTLP protocol; want one of %s", ErrConfig, name, v, strings.Join(protocols, ", "))
		}
	}
	return s, nil
}

// envInt reads a positive integer variable, or def when unset or invalid.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(strings.TrimSpace(os.Getenv(name))); err == nil && n > 0 {
		return n
	}
	return def
}
