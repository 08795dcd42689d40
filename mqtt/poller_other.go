//go:build !linux

package mqtt

import (
	"errors"
	"log/slog"
	"syscall"
)

// poller is Linux's epoll; elsewhere an idle client keeps a goroutine,
// blocked on its next byte without a read buffer.
type poller struct{}

var errCannotPark = errors.New("mqtt: connection cannot be parked")

func newPoller(*slog.Logger) (*poller, error) { return nil, nil }

func (p *poller) watch(*client) error { return errCannotPark }
func (p *poller) forget(*client)      {}
func (p *poller) close()              {}

// writeNow leaves every write to the session's writer.
func writeNow(syscall.RawConn, []byte) int { return 0 }
