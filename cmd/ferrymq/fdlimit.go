package main

import (
	"log/slog"
	"math"
)

// fdReserve is how many of the process's file descriptors (RLIMIT_NOFILE)
// are kept from client connections for the store's files, the listeners,
// the management API and its clients, and bridges: a tenth of the limit,
// at least 64 (half of a limit below 128). RabbitMQ keeps the same kind of
// reserve from its sockets limit.
func fdReserve(nofile int) int {
	return min(max(64, nofile/10), nofile/2)
}

// readmeNOFILE is the README section on raising the open-file limit.
const readmeNOFILE = "README.md#many-connections-the-open-file-limit"

// connectionLimit returns the node's connection limit, given max_connections
// (0: none set) and the process's open-file limit (0: unknown or unlimited),
// and sockets, the connections the open-file limit leaves room for after
// fdReserve (0: no bound known). A max_connections that is set wins, even
// above sockets: the operator chose it. Unset, the limit is sockets, so a
// client beyond it is refused with the protocol's limit answer instead of
// the broker running out of descriptors at accept.
func connectionLimit(configured int, nofile uint64) (limit, sockets int) {
	if nofile > 0 && nofile <= math.MaxInt32 {
		n := int(nofile)
		sockets = max(n-fdReserve(n), 1)
	}
	if configured > 0 {
		return configured, sockets
	}
	return sockets, sockets
}

// nodeConnectionLimit is connectionLimit for this process, logged at INFO
// (the limit, 0 for none, and where it comes from), and at WARN for a
// max_connections that the open-file limit cannot serve.
func nodeConnectionLimit(configured int, log *slog.Logger) (limit, sockets int, nofile uint64) {
	nofile = openFileLimit()
	limit, sockets = connectionLimit(configured, nofile)
	from := "max_connections"
	switch {
	case configured == 0 && limit > 0:
		from = "open_file_limit"
	case configured == 0:
		from = "none: the open-file limit is unknown or unlimited"
	}
	log.Info("connection limit", "max_connections", limit, "from", from, "open_file_limit", nofile, "sockets_limit", sockets)
	if configured > 0 && sockets > 0 && configured > sockets {
		log.Warn("max_connections is above what the open-file limit serves: connections beyond sockets_limit would run out of file descriptors",
			"max_connections", configured, "sockets_limit", sockets, "open_file_limit", nofile, "fd_reserve", int(nofile)-sockets,
			"hint", "raise LimitNOFILE (ulimit -n); see "+readmeNOFILE)
	}
	return limit, sockets, nofile
}
