# fsmon_exporter. `make run` and `make test` need root (fanotify needs
# CAP_SYS_ADMIN); everything the tests need is installed or built here.
GO        ?= go
BIN       := fsmon_exporter
PKG       := github.com/fsmon/fsmon_exporter
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BRANCH    ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -s -w \
	-X github.com/prometheus/common/version.Version=$(VERSION) \
	-X github.com/prometheus/common/version.Revision=$(REVISION) \
	-X github.com/prometheus/common/version.Branch=$(BRANCH) \
	-X github.com/prometheus/common/version.BuildUser=make \
	-X github.com/prometheus/common/version.BuildDate=$(shell date -u +%Y%m%d-%H:%M:%S)
export CGO_ENABLED ?= 0

# Parts of the test suite add themselves to TEST_TARGETS from their own
# make fragments (alerts/, dashboards/, tools/otelcol/ ...).
TEST_TARGETS := test-go
-include $(wildcard */*.mk)

.PHONY: all build run test test-go test-race vet lint fmt-check bench soak fuzz mutate mutate-check clean deps-debian
all: build

build: $(BIN)

$(BIN): $(shell find . -name '*.go' -not -path './tools/*' 2>/dev/null) go.mod go.sum
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ .

run: $(BIN)
	./$(BIN) $(ARGS)

vet:
	$(GO) vet ./...

# staticcheck, pinned; not part of `make test` (it downloads the tool).
lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

# Debian packages the tests use (prometheus, alertmanager, promtool,
# busybox; the container runtimes of the container tests: Docker,
# containerd with its CRI plugin, podman with runc; systemd and curl for
# the package's test under systemd, deploy/test; the programs that
# examples/host-protect.yaml must let work: passwd, login, sshd, sudo).
# Installed only when missing, so a machine that has them pays nothing.
DEBIAN_PKGS := prometheus prometheus-alertmanager busybox-static docker.io containerd podman runc systemd curl \
	passwd login openssh-server openssh-client sudo
deps-debian:
	@missing=""; for p in $(DEBIAN_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test: fmt-check vet mutate-check $(BIN) deps-debian $(TEST_TARGETS)

# The runtimes (containerd, dockerd; no systemd) run for the tests only:
# tools/runtimes/runtimes.sh starts what is not running yet, builds the
# test image from busybox, and stops what it started afterwards (one
# shell: the script knows its users by the shell that calls it).
test-go: $(BIN) deps-debian
	tools/runtimes/runtimes.sh up && FSMON_BINARY=$(CURDIR)/$(BIN) $(GO) test -count=1 -timeout 12m ./...; \
		rc=$$?; tools/runtimes/runtimes.sh down; exit $$rc

# The engine and the collectors under the race detector (root).
test-race:
	$(GO) test -count=1 -race -timeout 10m ./fsmon/... ./collector/... ./exporters/...

bench: $(BIN)
	$(MAKE) -C bench

# The soak (a benchmark, not a test): DURATION=10m by default.
DURATION ?= 10m
soak: $(BIN)
	$(MAKE) -C bench soak DURATION=$(DURATION)

# Every parser's fuzzer for FUZZTIME each (make test runs their seed
# corpora only). A crash leaves its input under testdata/fuzz/ of the
# package, where go test replays it from then on.
FUZZTIME ?= 30s
FUZZERS := ./fsmon/policy:FuzzParse ./fsmon/internal/fanotify:FuzzParse ./fsmon/internal/inotify:FuzzParse \
	./fsmon/internal/proc:FuzzParseStatView ./fsmon/internal/container:FuzzParseInitState ./fsmon/internal/container:FuzzParseState \
	./exporters/jsonl:FuzzQuote ./fsmon/engine/internal/allowstate:FuzzDecode \
	./fsmon/engine/internal/baseline:FuzzDecode \
	./fsmon/engine/internal/learnstate:FuzzDecode
fuzz:
	@set -e; for f in $(FUZZERS); do \
		echo "fuzz $${f%%:*} $${f##*:} for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$${f##*:}$$" -fuzztime $(FUZZTIME) $${f%%:*}; \
	done

# Mutation check (root): applies each wrong change of
# tools/mutate/mutations/*.txt to a copy of the tree, one at a time, runs
# the tests it names, and fails if any survives. MUTATE_ARGS='-only REGEX'
# runs some of them. Not part of `make test`: it runs the suites once per
# mutation.
mutate: deps-debian $(OTELCOL_BIN)
	OTELCOL_BINARY=$(CURDIR)/$(OTELCOL_BIN) $(GO) run ./tools/mutate $(MUTATE_ARGS)

# Part of `make test`: every mutation of the list still applies, so code
# that moves cannot leave the list testing nothing.
mutate-check:
	$(GO) run ./tools/mutate -check

clean:
	rm -f $(BIN)
