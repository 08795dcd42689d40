package main

import "testing"

func TestConnectionLimit(t *testing.T) {
	for _, tc := range []struct {
		configured            int
		nofile                uint64
		wantLimit, wantSocket int
	}{
		// Unset: the open-file limit less the reserve, a tenth, at least 64.
		{0, 300, 236, 236},
		{0, 1024, 922, 922},
		{0, 20000, 18000, 18000},
		{0, 200000, 180000, 180000},
		{0, 524288, 471860, 471860},
		// Below 128 the reserve is half: a broker still takes connections.
		{0, 100, 50, 50},
		{0, 1, 1, 1},
		// Unknown (0) or unlimited (RLIM_INFINITY): no limit.
		{0, 0, 0, 0},
		{0, ^uint64(0), 0, 0},
		{0, 1 << 40, 0, 0},
		// Set: max_connections wins, below or above what the descriptors allow.
		{100, 300, 100, 236},
		{500, 300, 500, 236},
		{100000, 0, 100000, 0},
		{100000, ^uint64(0), 100000, 0},
	} {
		limit, sockets := connectionLimit(tc.configured, tc.nofile)
		if limit != tc.wantLimit || sockets != tc.wantSocket {
			t.Errorf("connectionLimit(%d, %d) = %d, %d; want %d, %d", tc.configured, tc.nofile, limit, sockets, tc.wantLimit, tc.wantSocket)
		}
	}
}
