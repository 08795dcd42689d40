package wire

import "encoding/binary"

// Method is one AMQP method: a generated struct such as *BasicPublish.
//
// The ids are returned as a pair by ID rather than by separate ClassID and
// MethodID methods because connection.close and channel.close have fields of
// those names (class-id, method-id in the spec). The pair also feeds
// MethodName directly: MethodName(m.ID()).
type Method interface {
	// ID returns the class and method ids.
	ID() (classID, methodID uint16)
	// Append appends the arguments, without ids, to b and returns the
	// extended buffer. A shortstr longer than 255 bytes is cut at a UTF-8
	// boundary (only server-made text, such as a reply text naming a long
	// queue, can be that long). A table value whose Go type is outside the
	// core.Table mapping makes Append panic with an error wrapping
	// msgcodec.ErrUnencodable: it is a bug in whatever built the table,
	// since tables decoded by this package always encode; check hand-built
	// tables with msgcodec.AppendTable first.
	Append(b []byte) []byte
	// HasContent reports whether a content header and body follow the
	// method (basic.publish, basic.deliver, basic.return, basic.get-ok).
	HasContent() bool
}

// methodCodec is what every generated struct implements; Decode is left out
// of Method so that Method stays the small interface callers need.
type methodCodec interface {
	Method
	Decode(args []byte) error
}

// DecodeMethod decodes a method frame payload: class id, method id and
// arguments. The result is a pointer to the generated struct, which shares
// nothing with payload. Unknown ids give ErrUnknownMethod and bad arguments
// ErrMalformed; both carry the ids in Error.ClassID and Error.MethodID.
//
// It allocates the struct; a hot path that expects a given method can check
// the ids itself and call Decode on a struct it reuses.
func DecodeMethod(payload []byte) (Method, error) {
	if len(payload) < 4 {
		return nil, newError(ErrMalformed, "method frame payload of "+itoa(len(payload))+" bytes, need 4 for the ids")
	}
	classID := binary.BigEndian.Uint16(payload)
	methodID := binary.BigEndian.Uint16(payload[2:])
	m := newMethod(classID, methodID)
	if m == nil {
		e := &Error{Code: ErrUnknownMethod.Code, Text: ErrUnknownMethod.Text, kind: ErrUnknownMethod}
		return nil, e.inMethod(classID, methodID)
	}
	if err := m.Decode(payload[4:]); err != nil {
		return nil, err
	}
	return m, nil
}
