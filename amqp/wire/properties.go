package wire

import (
	"encoding/binary"

	"github.com/ferrymq/ferrymq/core"
)

// validFlags are the property bits basic defines. Bit 0 is the continuation
// bit (a second flags word), which no 0-9-1 class needs, and bit 1 names no
// property; either one set is malformed.
const validFlags uint16 = core.FlagContentType | core.FlagContentEncoding | core.FlagHeaders |
	core.FlagDeliveryMode | core.FlagPriority | core.FlagCorrelationID | core.FlagReplyTo |
	core.FlagExpiration | core.FlagMessageID | core.FlagTimestamp | core.FlagType |
	core.FlagUserID | core.FlagAppID | core.FlagClusterID

// contentHeaderFixed is class-id, weight, body-size and property-flags.
const contentHeaderFixed = 2 + 2 + 8 + 2

// DecodeContentHeader decodes a content header frame payload: class-id,
// weight (must be 0), body-size, property flags and the properties whose flags
// are set, laid out as the basic class defines them (the only content class of
// 0-9-1). p.Flags is set to the flags word as received, so properties that
// were present but empty survive a re-encode. Nothing in p aliases payload.
//
// The caller checks classID against the method the header follows and
// answers a mismatch with 505 UNEXPECTED_FRAME.
func DecodeContentHeader(payload []byte) (classID uint16, bodySize uint64, p core.Properties, err error) {
	if len(payload) < contentHeaderFixed {
		return 0, 0, p, newError(ErrMalformed, "content header of "+itoa(len(payload))+" bytes, need "+itoa(contentHeaderFixed))
	}
	classID = binary.BigEndian.Uint16(payload)
	if w := binary.BigEndian.Uint16(payload[2:]); w != 0 {
		return classID, 0, p, newError(ErrMalformed, "content header weight "+itoa(int(w))+", must be 0")
	}
	bodySize = binary.BigEndian.Uint64(payload[4:])
	flags := binary.BigEndian.Uint16(payload[12:])
	if flags&^validFlags != 0 {
		return classID, bodySize, p, newError(ErrMalformed, "content header property flags "+hex16(flags)+" set unknown or continuation bits")
	}
	d := decoder{b: payload[contentHeaderFixed:]}
	p.Flags = flags
	if flags&core.FlagContentType != 0 {
		p.ContentType = d.shortstr()
	}
	if flags&core.FlagContentEncoding != 0 {
		p.ContentEncoding = d.shortstr()
	}
	if flags&core.FlagHeaders != 0 {
		p.Headers = d.table()
	}
	if flags&core.FlagDeliveryMode != 0 {
		p.DeliveryMode = d.octet()
	}
	if flags&core.FlagPriority != 0 {
		p.Priority = d.octet()
	}
	if flags&core.FlagCorrelationID != 0 {
		p.CorrelationID = d.shortstr()
	}
	if flags&core.FlagReplyTo != 0 {
		p.ReplyTo = d.shortstr()
	}
	if flags&core.FlagExpiration != 0 {
		p.Expiration = d.shortstr()
	}
	if flags&core.FlagMessageID != 0 {
		p.MessageID = d.shortstr()
	}
	if flags&core.FlagTimestamp != 0 {
		p.Timestamp = d.timestamp()
	}
	if flags&core.FlagType != 0 {
		p.Type = d.shortstr()
	}
	if flags&core.FlagUserID != 0 {
		p.UserID = d.shortstr()
	}
	if flags&core.FlagAppID != 0 {
		p.AppID = d.shortstr()
	}
	if flags&core.FlagClusterID != 0 {
		p.ClusterID = d.shortstr()
	}
	d.end()
	if d.err != nil {
		d.err.Text = "content header: " + d.err.Text
		return classID, bodySize, core.Properties{}, d.err
	}
	return classID, bodySize, p, nil
}

// PropertyFlags returns the flags word AppendContentHeader writes for p:
// p.Flags (the bits seen on the wire, or set by hand to send an empty
// property) plus the bit of every non-zero field, so a field filled in later,
// such as headers added by dead-lettering, is sent too. A nil p has no
// properties.
func PropertyFlags(p *core.Properties) uint16 {
	if p == nil {
		return 0
	}
	f := p.Flags & validFlags
	if p.ContentType != "" {
		f |= core.FlagContentType
	}
	if p.ContentEncoding != "" {
		f |= core.FlagContentEncoding
	}
	if p.Headers != nil {
		f |= core.FlagHeaders
	}
	if p.DeliveryMode != 0 {
		f |= core.FlagDeliveryMode
	}
	if p.Priority != 0 {
		f |= core.FlagPriority
	}
	if p.CorrelationID != "" {
		f |= core.FlagCorrelationID
	}
	if p.ReplyTo != "" {
		f |= core.FlagReplyTo
	}
	if p.Expiration != "" {
		f |= core.FlagExpiration
	}
	if p.MessageID != "" {
		f |= core.FlagMessageID
	}
	if !p.Timestamp.IsZero() {
		f |= core.FlagTimestamp
	}
	if p.Type != "" {
		f |= core.FlagType
	}
	if p.UserID != "" {
		f |= core.FlagUserID
	}
	if p.AppID != "" {
		f |= core.FlagAppID
	}
	if p.ClusterID != "" {
		f |= core.FlagClusterID
	}
	return f
}

// AppendContentHeader appends a content header frame payload (no frame
// header) for a body of bodySize bytes with properties p, which may be nil.
// The properties written are those of PropertyFlags(p). It panics if
// p.Headers holds a value AppendTable cannot encode (see Method).
func AppendContentHeader(b []byte, classID uint16, bodySize uint64, p *core.Properties) []byte {
	flags := PropertyFlags(p)
	b = appendShort(b, classID)
	b = appendShort(b, 0) // weight, unused
	b = appendLonglong(b, bodySize)
	b = appendShort(b, flags)
	if flags == 0 {
		return b
	}
	if flags&core.FlagContentType != 0 {
		b = appendShortstr(b, p.ContentType)
	}
	if flags&core.FlagContentEncoding != 0 {
		b = appendShortstr(b, p.ContentEncoding)
	}
	if flags&core.FlagHeaders != 0 {
		b = appendTableInArgs(b, p.Headers)
	}
	if flags&core.FlagDeliveryMode != 0 {
		b = append(b, p.DeliveryMode)
	}
	if flags&core.FlagPriority != 0 {
		b = append(b, p.Priority)
	}
	if flags&core.FlagCorrelationID != 0 {
		b = appendShortstr(b, p.CorrelationID)
	}
	if flags&core.FlagReplyTo != 0 {
		b = appendShortstr(b, p.ReplyTo)
	}
	if flags&core.FlagExpiration != 0 {
		b = appendShortstr(b, p.Expiration)
	}
	if flags&core.FlagMessageID != 0 {
		b = appendShortstr(b, p.MessageID)
	}
	if flags&core.FlagTimestamp != 0 {
		b = appendTimestamp(b, p.Timestamp)
	}
	if flags&core.FlagType != 0 {
		b = appendShortstr(b, p.Type)
	}
	if flags&core.FlagUserID != 0 {
		b = appendShortstr(b, p.UserID)
	}
	if flags&core.FlagAppID != 0 {
		b = appendShortstr(b, p.AppID)
	}
	if flags&core.FlagClusterID != 0 {
		b = appendShortstr(b, p.ClusterID)
	}
	return b
}

func hex16(v uint16) string {
	const hex = "0123456789abcdef"
	return "0x" + string([]byte{hex[v>>12], hex[v>>8&15], hex[v>>4&15], hex[v&15]})
}
