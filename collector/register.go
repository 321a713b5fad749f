package collector

import (
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors/version"
)

// Register registers every fsmon_ metric on reg: the state collector over
// src, the event counters (built by the caller first, since the engine
// takes its sinks when it is created and the state source is the engine
// itself), the reload metrics (returned, for main to Set on every load)
// and fsmon_build_info. Go and process metrics are main's business
// (--web.disable-exporter-metrics).
func Register(reg prometheus.Registerer, src StateSource, events *EventMetrics, logger *slog.Logger) (*ReloadMetrics, error) {
	reload := NewReloadMetrics()
	for _, c := range []prometheus.Collector{
		NewStateCollector(src, logger),
		events,
		reload,
		version.NewCollector(namespace),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("registering fsmon metrics: %w", err)
		}
	}
	return reload, nil
}
