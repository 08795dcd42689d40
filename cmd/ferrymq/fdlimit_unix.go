//go:build unix

package main

import "syscall"

// openFileLimit is the process's RLIMIT_NOFILE soft limit (which the Go
// runtime raised to the hard one at start), 0 if unknown
// (RLIM_INFINITY is above any limit connectionLimit takes).
func openFileLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return uint64(rl.Cur)
}
