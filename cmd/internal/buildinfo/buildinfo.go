// Package buildinfo names the release a binary of this repository was
// built from, the same way for the broker and its tools.
package buildinfo

import "runtime/debug"

// Version returns set, the version `make build` gives the binary with
// -ldflags "-X main.version=..." (from `git describe`), if it is not
// empty. Otherwise what the Go toolchain recorded: the module version (a
// tag, when built with `go install module@tag`), else the VCS revision `go
// build` stamps into a binary built in a git checkout, with "-dirty" when
// it had local changes, else "devel".
func Version(set string) string {
	if set != "" {
		return set
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
