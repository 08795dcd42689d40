package amqp

import (
	"errors"
	"fmt"

	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// amqpError is a refusal to send as channel.close or connection.close: the
// spec says which by the reply code (wire.IsHardError), except for a
// store's refusal of one operation (channelOnly).
type amqpError struct {
	code              uint16
	text              string // full reply text, "NOT_FOUND - ..."
	classID, methodID uint16
	// channelOnly closes only the channel although the code is a
	// connection error: 541 INTERNAL_ERROR for a write the store refused
	// for good (core.ErrStoreRefused, a record or message over the store's
	// limits). That operation is bad, not the connection, whose other
	// channels go on. RabbitMQ closes the connection on any 541; a store
	// outage still does here.
	channelOnly bool
}

func (e *amqpError) Error() string { return e.text }

func (e *amqpError) hard() bool { return !e.channelOnly && wire.IsHardError(e.code) }

// storeRefused reports whether err is the store's refusal of the one
// operation that returned it (core.ErrStoreRefused): core made the change
// in memory all the same, and the channel takes it back before it closes,
// so that memory agrees with the disk and a second declaration does not
// find, as if stored, what the first could not store. Only a new entity or
// binding writes a record, so what is taken back is what this operation
// added. After a store outage nothing is taken back: the store retries the
// write.
func storeRefused(err error) bool { return errors.Is(err, core.ErrStoreRefused) }

// newError returns an amqpError with RabbitMQ's "NAME - text" reply text.
func newError(code uint16, format string, args ...any) *amqpError {
	return &amqpError{code: code, text: wire.ReplyCodeName(code) + " - " + fmt.Sprintf(format, args...)}
}

// asAMQPError turns any error from core or wire into an amqpError stamped
// with the method being handled. Errors of unknown kind are 541
// INTERNAL_ERROR: they are bugs, and the connection cannot go on.
func asAMQPError(err error, m wire.Method) *amqpError {
	var ae *amqpError
	var ce *core.Error
	var we *wire.Error
	switch {
	case errors.As(err, &ae):
	case errors.As(err, &ce):
		ae = &amqpError{code: uint16(ce.Code), text: ce.Error(), channelOnly: storeRefused(ce)}
	case errors.As(err, &we):
		ae = &amqpError{code: we.Code, text: wire.ReplyCodeName(we.Code) + " - " + we.Text, classID: we.ClassID, methodID: we.MethodID}
	default:
		ae = newError(wire.InternalError, "%v", err)
	}
	if ae.classID == 0 && m != nil {
		ae.classID, ae.methodID = m.ID()
	}
	return ae
}
