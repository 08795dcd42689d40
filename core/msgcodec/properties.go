package msgcodec

import (
	"encoding/binary"

	"github.com/ferrymq/ferrymq/core"
)

// validFlags are the property bits core.Properties defines. Bit 0 is AMQP's
// continuation bit (a second flags word), which no 0-9-1 class needs, and
// bit 1 names no property; either one set is malformed.
const validFlags uint16 = core.FlagContentType | core.FlagContentEncoding | core.FlagHeaders |
	core.FlagDeliveryMode | core.FlagPriority | core.FlagCorrelationID | core.FlagReplyTo |
	core.FlagExpiration | core.FlagMessageID | core.FlagTimestamp | core.FlagType |
	core.FlagUserID | core.FlagAppID | core.FlagClusterID

// PropertyFlags returns the flags word AppendProperties writes for p:
// p.Flags (the bits seen on the wire, or set by hand to send an empty
// property) plus the bit of every non-zero field, so a field filled in later,
// such as headers added by dead-lettering, is written too. A nil p has no
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

// AppendProperties appends the flags word of PropertyFlags(p) and then each
// property whose flag it sets, in flag order, as AMQP 0-9-1's basic class
// lays them out: short strings, octets, a field table for the headers and
// a 64-bit timestamp in seconds. A string over 255 bytes is cut at the
// last UTF-8 boundary that fits. p may be nil. The error is the headers
// table's, wrapping ErrUnencodable; the buffer returned with it is to be
// discarded.
func AppendProperties(b []byte, p *core.Properties) ([]byte, error) {
	flags := PropertyFlags(p)
	b = appendShort(b, flags)
	if flags == 0 {
		return b, nil
	}
	if flags&core.FlagContentType != 0 {
		b = appendShortstr(b, p.ContentType)
	}
	if flags&core.FlagContentEncoding != 0 {
		b = appendShortstr(b, p.ContentEncoding)
	}
	if flags&core.FlagHeaders != 0 {
		var err error
		if b, err = AppendTable(b, p.Headers); err != nil {
			return b, err
		}
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
	return b, nil
}

// ReadProperties reads what AppendProperties writes, and nothing else: b
// must hold exactly the flags word and the properties it announces. p.Flags
// is the flags word as read, so that properties present but empty survive
// a re-encode. Nothing in p aliases b. Bad input is an *Error.
func ReadProperties(b []byte) (p core.Properties, err error) {
	if len(b) < 2 {
		return p, malformed("property flags need 2 bytes, " + itoa(len(b)) + " remain")
	}
	flags := binary.BigEndian.Uint16(b)
	if flags&^validFlags != 0 {
		return p, malformed("property flags " + hex16(flags) + " set unknown or continuation bits")
	}
	d := decoder{b: b[2:]}
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
		return core.Properties{}, d.err
	}
	return p, nil
}

func hex16(v uint16) string {
	const hex = "0123456789abcdef"
	return "0x" + string([]byte{hex[v>>12], hex[v>>8&15], hex[v>>4&15], hex[v&15]})
}
