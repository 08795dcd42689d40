package amqp

import (
	"errors"
	"fmt"

	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// amqpError is a refusal to send as channel.close or connection.close: the
// spec says which by the reply code (wire.IsHardError).
type amqpError struct {
	code              uint16
	text              string // full reply text, "NOT_FOUND - ..."
	classID, methodID uint16
}

func (e *amqpError) Error() string { return e.text }

func (e *amqpError) hard() bool { return wire.IsHardError(e.code) }

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
		ae = &amqpError{code: uint16(ce.Code), text: ce.Error()}
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
