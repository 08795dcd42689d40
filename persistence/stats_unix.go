//go:build unix

package persistence

import (
	"io/fs"
	"syscall"
)

// diskBytes is what fi takes on disk: Badger's value-log files are
// preallocated sparse (a fresh one shows its full 128 MiB+ size while
// holding a few KiB), so the apparent size would mislead.
func diskBytes(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}
