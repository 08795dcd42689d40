package mqtt

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// Headers through which MQTT-only attributes travel in AMQP messages, as
// RabbitMQ's MQTT plugin names them where it has them.
const (
	hdrRetain        = "x-mqtt-retain"
	hdrCorrelationID = "x-correlation-id"
	hdrReplyToTopic  = "x-reply-to-topic"
	hdrPayloadFormat = "x-mqtt-payload-format-indicator"
	// hdrUserProperties keeps MQTT 5 user properties in order, repeated
	// names included [MQTT-3.3.2-18], when there is more than one: the
	// headers table, which AMQP consumers read, keeps only the last value
	// of each name.
	hdrUserProperties = "x-mqtt-user-properties"
)

// toMessage converts an MQTT PUBLISH into a core message for the exchange:
// QoS 0 is transient, QoS 1 and 2 persistent with x-mqtt-publish-qos; MQTT
// 5 properties map to their AMQP counterparts and user properties to
// headers.
func toMessage(exchange string, pk *packets.Packet, origin uint64) *core.Message {
	msg := &core.Message{
		Exchange:   exchange,
		RoutingKey: topic.RoutingKey(pk.TopicName),
		Body:       pk.Payload,
		Origin:     origin,
	}
	p := &msg.Properties
	p.DeliveryMode = 1
	var h core.Table
	set := func(k string, v any) {
		if h == nil {
			h = make(core.Table, 4)
		}
		h[k] = v
	}
	if qos := pk.FixedHeader.Qos; qos > 0 {
		p.DeliveryMode = 2
		set(topic.QoSHeader, int8(qos))
	}
	if pk.FixedHeader.Retain {
		set(hdrRetain, true)
	}
	props := &pk.Properties
	p.ContentType = props.ContentType
	if cd := props.CorrelationData; len(cd) > 0 {
		if len(cd) <= 255 && utf8.Valid(cd) {
			p.CorrelationID = string(cd)
		} else {
			set(hdrCorrelationID, append([]byte(nil), cd...))
		}
	}
	if props.ResponseTopic != "" {
		// In routing-key form, as RabbitMQ writes it, so that an AMQP
		// replier can publish to it directly.
		set(hdrReplyToTopic, topic.RoutingKey(props.ResponseTopic))
	}
	if props.PayloadFormatFlag {
		set(hdrPayloadFormat, props.PayloadFormat)
	}
	for _, u := range props.User {
		set(u.Key, u.Val)
	}
	if len(props.User) > 1 {
		ordered := make([]any, len(props.User))
		for i, u := range props.User {
			ordered[i] = []any{u.Key, u.Val}
		}
		set(hdrUserProperties, ordered)
	}
	if props.MessageExpiryInterval > 0 {
		p.Expiration = strconv.FormatUint(uint64(props.MessageExpiryInterval)*1000, 10)
	}
	if h != nil {
		p.Headers = h
	}
	return msg
}

// isRetained reports whether the publisher asked for the message to be
// retained (MQTT RETAIN, or an AMQP header x-mqtt-retain: true).
func isRetained(m *core.Message) bool {
	v, _ := m.Properties.Headers[hdrRetain].(bool)
	return v
}

// fillPublish sets the MQTT 5 properties of an outgoing PUBLISH from a
// core message (ignored by the encoder for older protocol versions).
func fillPublish(pk *packets.Packet, m *core.Message, now time.Time) {
	props := &pk.Properties
	p := &m.Properties
	props.ContentType = p.ContentType
	if p.CorrelationID != "" {
		props.CorrelationData = []byte(p.CorrelationID)
	}
	if p.Expiration != "" {
		if ms, err := strconv.ParseInt(p.Expiration, 10, 64); err == nil {
			left := time.Duration(ms)*time.Millisecond - now.Sub(m.Published)
			// Rounded up: a message with time left must not arrive as
			// "no expiry" (0).
			props.MessageExpiryInterval = uint32(max((left+time.Second-1)/time.Second, 1))
		}
	}
	ordered, _ := p.Headers[hdrUserProperties].([]any)
	for _, kv := range ordered {
		if pair, ok := kv.([]any); ok && len(pair) == 2 {
			k, _ := pair[0].(string)
			v, _ := pair[1].(string)
			props.User = append(props.User, packets.UserProperty{Key: k, Val: v})
		}
	}
	for k, v := range p.Headers {
		switch k {
		case topic.QoSHeader, hdrRetain, hdrUserProperties:
		case hdrCorrelationID:
			switch x := v.(type) {
			case []byte:
				props.CorrelationData = x
			case string:
				props.CorrelationData = []byte(x)
			}
		case hdrReplyToTopic:
			if s, ok := v.(string); ok {
				props.ResponseTopic = topic.Name(s)
			}
		case hdrPayloadFormat:
			if b, ok := core.IntArg(v); ok {
				props.PayloadFormat, props.PayloadFormatFlag = byte(b), true
			}
		default:
			if ordered != nil {
				continue // already sent, in order
			}
			if s, ok := userValue(v); ok && !strings.HasPrefix(k, "x-death") {
				props.User = append(props.User, packets.UserProperty{Key: k, Val: s})
			}
		}
	}
}

// userValue renders an AMQP header value as an MQTT user property value;
// tables and arrays have no MQTT form and are left out.
func userValue(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case []byte:
		if utf8.Valid(x) {
			return string(x), true
		}
		return "", false
	case bool, float32, float64:
		return fmt.Sprint(x), true
	case time.Time:
		return x.UTC().Format(time.RFC3339), true
	}
	if n, ok := core.IntArg(v); ok {
		return strconv.FormatInt(n, 10), true
	}
	return "", false
}
