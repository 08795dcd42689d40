//go:build !unix

package persistence

import "io/fs"

// diskBytes is fi's size; see stats_unix.go.
func diskBytes(fi fs.FileInfo) int64 { return fi.Size() }
