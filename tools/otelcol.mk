# The test OpenTelemetry Collector (tools/otelcol, its own module) and the
# tests of exporters/ that run against it. This fragment sits one level
# deep (tools/otelcol.mk, not tools/otelcol/otelcol.mk) because the top
# Makefile includes */*.mk only.
OTELCOL_DIR := tools/otelcol
OTELCOL_BIN := $(OTELCOL_DIR)/bin/otelcol-test

.PHONY: otelcol test-otel

otelcol: $(OTELCOL_BIN)

# Rebuilt only when its sources or module files change.
$(OTELCOL_BIN): $(wildcard $(OTELCOL_DIR)/*.go) $(OTELCOL_DIR)/go.mod $(OTELCOL_DIR)/go.sum
	cd $(OTELCOL_DIR) && $(GO) build -trimpath -o bin/otelcol-test .

test-otel: $(OTELCOL_BIN)
	OTELCOL_BINARY=$(CURDIR)/$(OTELCOL_BIN) $(GO) test -count=1 -timeout 15m ./exporters/...

# `make test` runs the exporter tests through test-go (`go test ./...`
# includes ./exporters/...), which gets the collector here; test-otel
# runs them alone.
test-go: $(OTELCOL_BIN)
test-go: export OTELCOL_BINARY := $(CURDIR)/$(OTELCOL_BIN)
