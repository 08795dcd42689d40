package main

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// version is the release this binary was built from. `make build` sets it
// from `git describe` with -ldflags "-X main.version=..."; a plain `go build`
// leaves it empty, and buildVersion falls back to what the Go toolchain
// recorded.
var version string

// buildVersion returns the version to log and print: the -ldflags one if
// set, else the module version from the build info (a tag when built with
// `go install module@tag`), else the VCS revision `go build` stamps into a
// binary built in a git checkout (with "-dirty" when it had local changes),
// else "devel".
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "-dirty"
	}
	return "devel-" + rev
}

// versionLine is what --version prints: the version and the Go toolchain
// that built the binary, as `go version` does.
func versionLine() string {
	return strings.Join([]string{"ferrymq", buildVersion(), runtime.Version(), runtime.GOOS + "/" + runtime.GOARCH}, " ")
}
