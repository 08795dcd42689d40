package wire

import "strconv"

// Error is a protocol violation found while reading the peer's bytes. Every
// error this package returns for bad input is an *Error, so the connection can
// answer with connection.close without parsing text:
//
//	var e *wire.Error
//	if errors.As(err, &e) {
//		// reply-code e.Code, reply-text ReplyCodeName(e.Code)+" - "+e.Text,
//		// class-id e.ClassID, method-id e.MethodID
//	}
//
// The sentinels below are the kinds; errors.Is(err, ErrMalformed) matches any
// detailed error of that kind. The reply codes are:
//
//	ErrFrameTooLarge     501 FRAME_ERROR     declared size over frame-max
//	ErrBadFrameEnd       501 FRAME_ERROR     frame-end octet is not 0xCE
//	ErrUnknownFrameType  501 FRAME_ERROR     frame type not 1, 2, 3 or 8
//	ErrMalformed         502 SYNTAX_ERROR    truncated, oversized length, bad tag, trailing bytes
//	ErrUnknownMethod     540 NOT_IMPLEMENTED class/method id pair not in the spec
//
// 503 COMMAND_INVALID and 505 UNEXPECTED_FRAME are never produced here: they
// depend on connection state (a method on the wrong channel, a body frame
// without a header), which only the connection knows.
//
// After any of these errors the byte stream can no longer be trusted to be in
// step; the connection must close it.
type Error struct {
	// Code is the AMQP reply code to close the connection with.
	Code uint16
	// Text says what was wrong, without the reply-code name.
	Text string
	// ClassID and MethodID identify the method being decoded when the error
	// was found, as connection.close wants them; both are 0 when the error is
	// not inside a method frame.
	ClassID, MethodID uint16

	kind *Error // the sentinel this is an instance of; nil for sentinels
}

// Error implements error.
func (e *Error) Error() string { return "wire: " + e.Text }

// Is reports whether e is an instance of the sentinel target, so that
// errors.Is(err, ErrMalformed) works on detailed errors.
func (e *Error) Is(target error) bool { return e.kind != nil && target == error(e.kind) }

// Sentinel error kinds; see Error for the reply code of each.
var (
	ErrFrameTooLarge    = &Error{Code: FrameError, Text: "frame too large"}
	ErrBadFrameEnd      = &Error{Code: FrameError, Text: "bad frame-end octet"}
	ErrUnknownFrameType = &Error{Code: FrameError, Text: "unknown frame type"}
	ErrMalformed        = &Error{Code: SyntaxError, Text: "malformed"}
	ErrUnknownMethod    = &Error{Code: NotImplemented, Text: "unknown method"}
)

// newError returns a detailed instance of kind. Only the error path calls it,
// so the string concatenation costs nothing on good input.
func newError(kind *Error, detail string) *Error {
	return &Error{Code: kind.Code, Text: kind.Text + ": " + detail, kind: kind}
}

// inMethod stamps e with the failing method, prefixing its name to Text.
func (e *Error) inMethod(classID, methodID uint16) *Error {
	e.ClassID, e.MethodID = classID, methodID
	e.Text = MethodName(classID, methodID) + ": " + e.Text
	return e
}

func itoa(n int) string { return strconv.Itoa(n) }

// strconvQuoteByte renders an octet for an error text, printable or not.
func strconvQuoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return "'" + string(rune(c)) + "'"
	}
	const hex = "0123456789abcdef"
	return "0x" + string([]byte{hex[c>>4], hex[c&15]})
}
