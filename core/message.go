package core

import (
	"sync/atomic"
	"time"
)

// Table is an AMQP field table as core sees it. Values keep the Go type that
// matches their wire tag, so a table decoded and re-encoded is byte-exact:
//
//	bool 't', int8 'b', uint8 'B', int16 's', uint16 'u', int32 'I',
//	uint32 'i', int64 'l', float32 'f', float64 'd', Decimal 'D',
//	string 'S', []byte 'x', []any 'A' (elements use the same types),
//	time.Time 'T' (seconds, UTC), Table 'F', nil 'V'.
//
// A Table reachable from a Message is shared between queues and must not be
// modified after the message has been published; copy it first.
type Table map[string]any

// Decimal is the AMQP decimal-value: Value × 10^-Scale.
type Decimal struct {
	Scale uint8
	Value int32
}

// Properties are the AMQP basic content properties. The zero value of a field
// means "absent" except where a Has* flag exists: the wire format carries a
// presence bit per property, and those bits are kept so that a message
// round-trips unchanged.
type Properties struct {
	ContentType     string
	ContentEncoding string
	Headers         Table
	DeliveryMode    uint8 // 1 transient, 2 persistent; 0 absent
	Priority        uint8
	CorrelationID   string
	ReplyTo         string
	Expiration      string // milliseconds as decimal text, as on the wire
	MessageID       string
	Timestamp       time.Time
	Type            string
	UserID          string
	AppID           string
	ClusterID       string

	// Flags is the property-flags word seen on the wire. Bit 15 is
	// content-type, bit 2 is cluster-id. The encoder (core/msgcodec)
	// writes every property whose bit is set here or whose field is
	// non-zero, so a property received present-but-empty round-trips, and
	// a field filled in later (headers added by dead-lettering) is sent
	// without touching Flags.
	Flags uint16
}

// Property flag bits as on the wire, most significant first.
const (
	FlagContentType     uint16 = 1 << 15
	FlagContentEncoding uint16 = 1 << 14
	FlagHeaders         uint16 = 1 << 13
	FlagDeliveryMode    uint16 = 1 << 12
	FlagPriority        uint16 = 1 << 11
	FlagCorrelationID   uint16 = 1 << 10
	FlagReplyTo         uint16 = 1 << 9
	FlagExpiration      uint16 = 1 << 8
	FlagMessageID       uint16 = 1 << 7
	FlagTimestamp       uint16 = 1 << 6
	FlagType            uint16 = 1 << 5
	FlagUserID          uint16 = 1 << 4
	FlagAppID           uint16 = 1 << 3
	FlagClusterID       uint16 = 1 << 2
)

// Persistent reports whether the publisher asked for the message to survive
// a broker restart (delivery-mode 2).
func (p *Properties) Persistent() bool { return p.DeliveryMode == 2 }

// Message is one published message. After Publish it is immutable and shared
// by every queue it was routed to; queues hold references, never copies.
type Message struct {
	// ID is unique within one broker run; the store uses it to keep one copy
	// of the body for N queues.
	ID         uint64
	Exchange   string
	RoutingKey string
	Properties Properties
	Body       []byte
	// Published is when core first accepted the message (TTL counts from it).
	Published time.Time
	// Origin identifies the publishing session for MQTT's no-local; 0 for
	// none. It is not stored: the session does not outlive the broker.
	Origin uint64
}

// Size is the number of body bytes, the unit of x-max-length-bytes.
func (m *Message) Size() int { return len(m.Body) }

var messageIDs atomic.Uint64

// NextMessageID returns a fresh Message.ID.
func NextMessageID() uint64 { return messageIDs.Add(1) }
