# Deployment: the Helm chart, the image and the Debian package, and their
# tests (deploy/test, a Go module of its own: Helm's SDK, k8s.io/api and
# the Prometheus Operator's types stay out of the daemon's module).
#
#   make image   the image, from scratch, with no registry: the static
#                binary built here (build/fsmon_exporter), the host's CA
#                bundle, deploy/config.yml
#   make deb     build/fsmon-exporter_VERSION_amd64.deb (nfpm, tools/nfpm)
#   make test-deploy   the chart, manifests, image and package tests
#
# One version for the chart's appVersion, the image's tag and the
# package: the chart's appVersion.
APP_VERSION := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' deploy/helm/fsmon-exporter/Chart.yaml)
IMAGE       ?= ghcr.io/fsmon/fsmon_exporter:$(APP_VERSION)
IMAGE_DIR   := build/image
# The binary of the image and the package: static whatever CGO_ENABLED
# the caller has (FROM scratch has no C library), rebuilt with the daemon.
STATIC_BIN  := build/fsmon_exporter
DEB         := build/fsmon-exporter_$(APP_VERSION)_amd64.deb
NFPM_DIR    := tools/nfpm
NFPM_BIN    := $(NFPM_DIR)/bin/nfpm
CA_BUNDLE   ?= /etc/ssl/certs/ca-certificates.crt

TEST_TARGETS += test-deploy

.PHONY: image image-name deb test-deploy

image-name:
	@echo $(IMAGE)

# The image is rebuilt only when what goes into it changed: the stamp
# holds the image id, and a stamp whose image is gone (docker rmi, a new
# Docker) is rebuilt too.
image: $(IMAGE_DIR)/.stamp
	@docker image inspect $(IMAGE) >/dev/null 2>&1 || { rm -f $(IMAGE_DIR)/.stamp; $(MAKE) --no-print-directory $(IMAGE_DIR)/.stamp; }

$(STATIC_BIN): $(BIN)
	mkdir -p build
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ .

$(IMAGE_DIR)/.stamp: $(STATIC_BIN) deploy/image/Dockerfile deploy/config.yml
	rm -rf $(IMAGE_DIR) && mkdir -p $(IMAGE_DIR)
	cp $(STATIC_BIN) deploy/image/Dockerfile deploy/config.yml $(IMAGE_DIR)/
	cp $(CA_BUNDLE) $(IMAGE_DIR)/ca-certificates.crt
	DOCKER_BUILDKIT=0 docker build -q -t $(IMAGE) $(IMAGE_DIR) >/dev/null
	docker image inspect -f '{{.Id}}' $(IMAGE) >$@

$(NFPM_BIN): $(NFPM_DIR)/go.mod $(NFPM_DIR)/go.sum
	cd $(NFPM_DIR) && $(GO) build -trimpath -o bin/nfpm github.com/goreleaser/nfpm/v2/cmd/nfpm

deb: $(DEB)

$(DEB): $(STATIC_BIN) $(NFPM_BIN) deploy/nfpm.yaml deploy/config.yml deploy/fsmon_exporter.service $(wildcard deploy/deb/*) README.md $(wildcard docs/*.md)
	mkdir -p build
	DEB_VERSION=$(APP_VERSION) $(NFPM_BIN) package --config deploy/nfpm.yaml --packager deb --target $@

# The chart and manifest tests need neither root nor Docker; the image
# and package tests (root) get what they test from here. Docker runs for
# them as for test-go (tools/runtimes/runtimes.sh, one shell for up and
# down), which also makes the busybox image of the container they deny in.
test-deploy: $(BIN) deps-debian deb
	tools/runtimes/runtimes.sh up && $(MAKE) --no-print-directory image && \
		cd deploy/test && FSMON_BINARY=$(CURDIR)/$(BIN) FSMON_IMAGE=$(IMAGE) FSMON_DEB=$(CURDIR)/$(DEB) \
		$(GO) test -count=1 -timeout 8m ./...; \
		rc=$$?; cd $(CURDIR) && tools/runtimes/runtimes.sh down; exit $$rc

# deploy/kubernetes/daemonset.yaml is the chart's defaults rendered; after
# a change to the chart, regenerate it (TestManifests fails until then).
.PHONY: manifests
manifests:
	cd deploy/test && FSMON_UPDATE_MANIFESTS=1 $(GO) test -count=1 -run '^TestManifests$$' .
