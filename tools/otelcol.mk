# The test OpenTelemetry Collector (tools/otelcol, its own module) and the
# tests of exporters/ that run against it. This fragment sits one level
# deep (tools/otelcol.mk) because the top Makefile includes */*.mk only.
OTELCOL_DIR    := tools/otelcol
OTELCOL_BINARY := $(OTELCOL_DIR)/bin/otelcol-test

TEST_TARGETS += test-otel
.PHONY: otelcol test-otel

otelcol: $(OTELCOL_BINARY)

# Rebuilt only when its sources or module files change.
$(OTELCOL_BINARY): $(wildcard $(OTELCOL_DIR)/*.go) $(OTELCOL_DIR)/go.mod $(OTELCOL_DIR)/go.sum
	cd $(OTELCOL_DIR) && $(GO) build -trimpath -o bin/otelcol-test .

test-otel: $(OTELCOL_BINARY)
	OTELCOL_BINARY=$(CURDIR)/$(OTELCOL_BINARY) $(GO) test -count=1 -timeout 15m ./exporters/...
