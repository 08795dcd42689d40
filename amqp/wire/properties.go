package wire

import (
	"encoding/binary"
	"errors"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/core/msgcodec"
)

// contentHeaderFixed is class-id, weight and body-size; the property flags
// and properties follow, in msgcodec's encoding.
const contentHeaderFixed = 2 + 2 + 8

// DecodeContentHeader decodes a content header frame payload: class-id,
// weight (must be 0), body-size, then the property flags and the properties
// whose flags are set, laid out as the basic class defines them (the only
// content class of 0-9-1; see msgcodec.ReadProperties). p.Flags is set to
// the flags word as received, so properties that were present but empty
// survive a re-encode. Nothing in p aliases payload.
//
// The caller checks classID against the method the header follows and
// answers a mismatch with 505 UNEXPECTED_FRAME.
func DecodeContentHeader(payload []byte) (classID uint16, bodySize uint64, p core.Properties, err error) {
	if len(payload) < contentHeaderFixed+2 {
		return 0, 0, p, newError(ErrMalformed, "content header of "+itoa(len(payload))+" bytes, need "+itoa(contentHeaderFixed+2))
	}
	classID = binary.BigEndian.Uint16(payload)
	if w := binary.BigEndian.Uint16(payload[2:]); w != 0 {
		return classID, 0, p, newError(ErrMalformed, "content header weight "+itoa(int(w))+", must be 0")
	}
	bodySize = binary.BigEndian.Uint64(payload[4:])
	if p, err = msgcodec.ReadProperties(payload[contentHeaderFixed:]); err != nil {
		e := malformed(err)
		e.Text = "content header: " + e.Text
		return classID, bodySize, core.Properties{}, e
	}
	return classID, bodySize, p, nil
}

// AppendContentHeader appends a content header frame payload (no frame
// header) for a body of bodySize bytes with properties p, which may be nil.
// The properties written are those of msgcodec.PropertyFlags(p). It panics
// if p.Headers holds a value msgcodec cannot encode (see Method).
func AppendContentHeader(b []byte, classID uint16, bodySize uint64, p *core.Properties) []byte {
	b = appendShort(b, classID)
	b = appendShort(b, 0) // weight, unused
	b = appendLonglong(b, bodySize)
	b, err := msgcodec.AppendProperties(b, p)
	if err != nil {
		panic(err)
	}
	return b
}

// malformed turns a msgcodec decoding error into the ErrMalformed it is on
// the wire (502 SYNTAX_ERROR), keeping its text.
func malformed(err error) *Error {
	var me *msgcodec.Error
	if errors.As(err, &me) {
		return newError(ErrMalformed, me.Text)
	}
	return newError(ErrMalformed, err.Error())
}
