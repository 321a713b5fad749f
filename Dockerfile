# Multi-stage, where registries are reachable: a static binary built with
# the Go toolchain, on an image from scratch. `make image` builds the same
# final stage with no registry from deploy/image/Dockerfile (the binary
# built on the machine); deploy/test checks that the two final stages
# agree, line for line, but for where the files come from.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/prometheus/common/version.Version=${VERSION}" \
      -o /out/fsmon_exporter . \
 && cp /etc/ssl/certs/ca-certificates.crt deploy/config.yml /out/

FROM scratch
# Go's TLS reads the system roots from this file; without it an OTLP
# exporter over https fails with "x509: certificate signed by unknown
# authority". Nothing else is read from the image at run time: the host's
# and the containers' files are reached through /proc/PID/root.
COPY --from=build /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/config.yml /etc/fsmon_exporter/config.yml
COPY --from=build /out/fsmon_exporter /bin/fsmon_exporter
EXPOSE 9717
# Root, with the capabilities of deploy/helm/fsmon-exporter/README.md
# (docker run --pid=host --cap-drop=ALL --cap-add=SYS_ADMIN ...); not privileged.
USER 0:0
ENTRYPOINT ["/bin/fsmon_exporter"]
CMD ["--config.file=/etc/fsmon_exporter/config.yml"]
