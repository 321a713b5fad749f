# Alert rules and dashboards: `make test-alerts test-dashboards`, both part
# of `make test`. promtool comes with the Debian package prometheus
# (deps-debian); the dashboard tests are a Go module of their own
# (dashboards/test) so the PromQL parser stays out of the daemon's module,
# and include the end-to-end alerting test against the real Prometheus and
# Alertmanager, which needs the built binary and root.
TEST_TARGETS += test-alerts test-dashboards

.PHONY: test-alerts test-dashboards

test-alerts: deps-debian
	promtool check rules alerts/*.rules.yml
	promtool test rules alerts/*.test.yml
	promtool check config examples/prometheus.yml
	amtool check-config examples/alertmanager.yml

test-dashboards: $(BIN) deps-debian
	cd dashboards/test && FSMON_BINARY=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 10m ./...
