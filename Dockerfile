# syntax=docker/dockerfile:1
# Multi-stage: a static binary built with the Go toolchain, on a small
# distroless runtime image (no shell, no package manager).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=${VERSION}" \
      -o /out/fsmon_exporter .

FROM gcr.io/distroless/static-debian12
COPY --from=build /out/fsmon_exporter /bin/fsmon_exporter
EXPOSE 9717
# fanotify permission events need CAP_SYS_ADMIN: run as root, privileged,
# in the host's PID namespace (see deploy/kubernetes/daemonset.yaml).
USER 0:0
ENTRYPOINT ["/bin/fsmon_exporter"]
