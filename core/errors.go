package core

import (
	"errors"
	"fmt"
)

// Reply codes shared by both protocols. Core speaks AMQP's codes because
// RabbitMQ's behaviour is the reference; the MQTT adapter maps them to reason
// codes.
const (
	CodeContentTooLarge    = 311
	CodeNoRoute            = 312
	CodeNoConsumers        = 313
	CodeConnectionForced   = 320
	CodeInvalidPath        = 402
	CodeAccessRefused      = 403
	CodeNotFound           = 404
	CodeResourceLocked     = 405
	CodePreconditionFailed = 406
	CodeFrameError         = 501
	CodeSyntaxError        = 502
	CodeCommandInvalid     = 503
	CodeChannelError       = 504
	CodeUnexpectedFrame    = 505
	CodeResourceError      = 506
	CodeNotAllowed         = 530
	CodeNotImplemented     = 540
	CodeInternalError      = 541
)

// Error is a refusal with a reply code. Text is what RabbitMQ would put after
// the code name, e.g. "no queue 'q' in vhost '/'"; the AMQP layer prefixes
// "NOT_FOUND - ".
type Error struct {
	Code int
	Text string
	// Err is the cause, if any: for CodeInternalError from the store, the
	// store's error, so that the protocols can tell a refused write
	// (ErrStoreRefused) from a store outage.
	Err error
}

func (e *Error) Error() string { return CodeName(e.Code) + " - " + e.Text }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// ErrStoreRefused is wrapped by a store error that concerns one operation
// alone: the store will never write it (a record or a message over the
// store's limits) and goes on writing everything else, so retrying it is
// useless and nothing else is wrong. Any other store error is an outage
// (a full disk, an I/O error): the store retries the write, and the
// broker's disk alarm holds publishers meanwhile. The protocols answer
// the two differently (MQTT reason codes, AMQP channel or connection
// close).
var ErrStoreRefused = errors.New("store refused the write")

// storeError is the refusal of an operation whose store write failed
// with err: 541, with err as its cause.
func storeError(err error) *Error {
	return &Error{Code: CodeInternalError, Text: fmt.Sprintf("store: %v", err), Err: err}
}

// Errorf returns an *Error with the given code and formatted text.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Text: fmt.Sprintf(format, args...)}
}

// CodeName returns the spec's upper-case name of a reply code, as RabbitMQ
// writes it at the start of a reply-text.
func CodeName(code int) string {
	switch code {
	case 200:
		return "OK"
	case CodeContentTooLarge:
		return "CONTENT_TOO_LARGE"
	case CodeNoRoute:
		return "NO_ROUTE"
	case CodeNoConsumers:
		return "NO_CONSUMERS"
	case CodeConnectionForced:
		return "CONNECTION_FORCED"
	case CodeInvalidPath:
		return "INVALID_PATH"
	case CodeAccessRefused:
		return "ACCESS_REFUSED"
	case CodeNotFound:
		return "NOT_FOUND"
	case CodeResourceLocked:
		return "RESOURCE_LOCKED"
	case CodePreconditionFailed:
		return "PRECONDITION_FAILED"
	case CodeFrameError:
		return "FRAME_ERROR"
	case CodeSyntaxError:
		return "SYNTAX_ERROR"
	case CodeCommandInvalid:
		return "COMMAND_INVALID"
	case CodeChannelError:
		return "CHANNEL_ERROR"
	case CodeUnexpectedFrame:
		return "UNEXPECTED_FRAME"
	case CodeResourceError:
		return "RESOURCE_ERROR"
	case CodeNotAllowed:
		return "NOT_ALLOWED"
	case CodeNotImplemented:
		return "NOT_IMPLEMENTED"
	default:
		return "INTERNAL_ERROR"
	}
}
