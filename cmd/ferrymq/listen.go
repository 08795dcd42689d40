package main

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
)

// Accept retry bounds, as net/http's Server.Serve: 5 ms doubling to 1 s.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// retryListener is a net.Listener whose Accept rides out the errors a busy
// machine produces — out of file descriptors (EMFILE, ENFILE), of buffers or
// memory, a connection aborted before it was accepted — by backing off and
// trying again instead of returning them. A server's accept loop that
// returned (or a process that exited) on EMFILE would leave every listener
// dead long after the descriptors came back. Every listener of the broker
// is wrapped, so the protocol servers see only the errors that end a
// listener: closed, or something the kernel will not recover from.
//
// One WARN is logged per burst of failures, and one INFO when accepting
// works again, so an attack of 20,000 connects does not also flood the log.
type retryListener struct {
	net.Listener
	proto string
	log   *slog.Logger

	failing atomic.Bool // a burst is under way: its WARN was logged
	failed  atomic.Int64
}

// Accept waits for the next connection, retrying temporary failures with
// backoff. It returns when a connection arrives or the error is permanent.
func (l *retryListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			if l.failing.CompareAndSwap(true, false) {
				l.log.Info("accepting connections again", "proto", l.proto, "addr", l.Addr().String(),
					"failed_accepts", l.failed.Swap(0))
			}
			return c, nil
		}
		if !temporaryAcceptError(err) {
			return nil, err
		}
		l.failed.Add(1)
		backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
		if l.failing.CompareAndSwap(false, true) {
			l.log.Warn("accept failed; retrying with backoff until it works again", "proto", l.proto,
				"addr", l.Addr().String(), "err", err,
				"hint", "raise the open-file limit (LimitNOFILE) or lower max_connections")
		}
		time.Sleep(backoff)
	}
}

// temporaryAcceptError reports whether an Accept error goes away by itself:
// resource exhaustion, a peer that gave up before accept, or a timeout.
// net.ErrClosed and anything unknown end the listener.
func temporaryAcceptError(err error) bool {
	if errors.Is(err, net.ErrClosed) {
		return false
	}
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS,
		syscall.ENOMEM, syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN} {
		if errors.Is(err, errno) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}
