//go:build tools

// Package nfpm pins nfpm (github.com/goreleaser/nfpm), the packager of
// `make deb`, in a module of its own so that its dependencies stay out of
// the daemon's module. The Makefile builds its command from here.
package nfpm

import _ "github.com/goreleaser/nfpm/v2/cmd/nfpm"
