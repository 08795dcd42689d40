package msgcodec

import (
	"errors"
	"strconv"
)

// Error is malformed input found by a decoder: a length beyond the bytes
// that remain, an unknown field tag or property flag, nesting deeper than
// MaxTableDepth, bytes left over. It carries no reply code: the caller
// decides what malformed input means in its protocol or file.
type Error struct {
	// Text says what was wrong, e.g. "table length 10 exceeds 3 remaining
	// bytes".
	Text string
}

// Error implements error.
func (e *Error) Error() string { return "msgcodec: malformed: " + e.Text }

// ErrUnencodable is wrapped by the encoders' errors: a value whose Go type
// is not in the core.Table mapping, a uint64 over MaxInt64, a key over 255
// bytes, or nesting over MaxTableDepth. It is a programming error on our
// side, never a peer's fault.
var ErrUnencodable = errors.New("msgcodec: value cannot be encoded in a field table")

// malformed returns an *Error. Only the error path calls it, so the string
// building costs nothing on good input.
func malformed(text string) *Error { return &Error{Text: text} }

func itoa(n int) string { return strconv.Itoa(n) }

// quoteByte renders a tag for an error text, printable or not.
func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return "'" + string(rune(c)) + "'"
	}
	const hex = "0123456789abcdef"
	return "0x" + string([]byte{hex[c>>4], hex[c&15]})
}
