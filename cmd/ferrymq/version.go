package main

import (
	"runtime"
	"strings"

	"github.com/ferrymq/ferrymq/cmd/internal/buildinfo"
)

// version is the release this binary was built from. `make build` sets it
// from `git describe` with -ldflags "-X main.version=..."; a plain `go build`
// leaves it empty, and buildVersion falls back to what the Go toolchain
// recorded.
var version string

// buildVersion returns the version to log and print.
func buildVersion() string { return buildinfo.Version(version) }

// versionLine is what --version prints: the version and the Go toolchain
// that built the binary, as `go version` does.
func versionLine() string {
	return strings.Join([]string{"ferrymq", buildVersion(), runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH}, " ")
}
