package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// The golden table, mochi style: each case is raw bytes, the value they
// decode to, and the error expected. Decode tests read raw and compare with
// want; encode tests encode want and compare with raw (unless decodeOnly);
// the fuzz targets take raw as their seed corpus.

type goldenKind int

const (
	kindMethod goldenKind = iota // raw is a method frame payload, want a Method
	kindHeader                   // raw is a content header payload, want a header
	kindStream                   // raw is a byte stream, want []Frame before err
)

type header struct {
	classID  uint16
	bodySize uint64
	props    core.Properties
}

type golden struct {
	name string
	kind goldenKind
	raw  []byte
	want any
	err  error // sentinel (errors.Is) or io error, nil for success
	// decodeOnly marks raw that decodes to want but is not what the encoder
	// writes for want (unused bits set).
	decodeOnly bool
}

// Byte builders, so that the raw side of each case reads like the spec
// (core/msgcodec's tests have the same ones).
func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
func u8(v uint8) []byte          { return []byte{v} }
func u16(v uint16) []byte        { return binary.BigEndian.AppendUint16(nil, v) }
func u32(v uint32) []byte        { return binary.BigEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte        { return binary.BigEndian.AppendUint64(nil, v) }
func ss(s string) []byte         { return cat(u8(uint8(len(s))), []byte(s)) }
func ls(s string) []byte         { return cat(u32(uint32(len(s))), []byte(s)) }
func lenPrefixed(parts ...[]byte) []byte {
	body := cat(parts...)
	return cat(u32(uint32(len(body))), body)
}
func entry(key string, tag byte, val ...[]byte) []byte {
	return cat(ss(key), u8(tag), cat(val...))
}
func methodPayload(classID, methodID uint16, args ...[]byte) []byte {
	return cat(u16(classID), u16(methodID), cat(args...))
}
func rawFrame(typ uint8, channel uint16, payload []byte) []byte {
	return cat(u8(typ), u16(channel), u32(uint32(len(payload))), payload, u8(FrameEnd))
}
func ts(sec int64) time.Time { return time.Unix(sec, 0).UTC() }

// allTypesTable holds one value of every field tag (the bytes of each are
// core/msgcodec's golden cases; here they go through real clients).
var allTypesTable = core.Table{
	"A": []any{int32(1), "two", nil, []any{}, core.Table{}},
	"B": uint8(0xFE),
	"D": core.Decimal{Scale: 2, Value: -12345},
	"F": core.Table{"inner": true},
	"I": int32(-5),
	"S": "longstr",
	"T": ts(1700000000),
	"V": nil,
	"b": int8(-2),
	"d": float64(3.5),
	"f": float32(-1.25),
	"i": uint32(4000000000),
	"l": int64(-1 << 40),
	"s": int16(-300),
	"t": true,
	"u": uint16(65000),
	"x": []byte{0, 1, 2},
}

var allProps = core.Properties{
	ContentType:     "application/json",
	ContentEncoding: "gzip",
	Headers:         core.Table{"x-death": []any{core.Table{"count": int64(1)}}},
	DeliveryMode:    2,
	Priority:        9,
	CorrelationID:   "corr",
	ReplyTo:         "amq.rabbitmq.reply-to",
	Expiration:      "60000",
	MessageID:       "msg-1",
	Timestamp:       ts(1700000001),
	Type:            "order.created",
	UserID:          "guest",
	AppID:           "app",
	ClusterID:       "cluster",
	Flags:           0xFFFC,
}

var allPropsRaw = cat(
	u16(ClassBasic), u16(0), u64(5), u16(0xFFFC),
	ss("application/json"), ss("gzip"),
	lenPrefixed(entry("x-death", 'A', lenPrefixed(u8('F'), lenPrefixed(entry("count", 'l', u64(1)))))),
	u8(2), u8(9), ss("corr"), ss("amq.rabbitmq.reply-to"), ss("60000"), ss("msg-1"),
	u64(1700000001), ss("order.created"), ss("guest"), ss("app"), ss("cluster"),
)

var goldenCases = []golden{
	// Methods.
	{name: "connection.start", kind: kindMethod,
		raw: methodPayload(10, 10, u8(0), u8(9),
			lenPrefixed(entry("capabilities", 'F', lenPrefixed(entry("publisher_confirms", 't', u8(1)))), entry("product", 'S', ls("ferrymq"))),
			ls("PLAIN AMQPLAIN"), ls("en_US")),
		want: &ConnectionStart{VersionMajor: 0, VersionMinor: 9,
			ServerProperties: core.Table{"capabilities": core.Table{"publisher_confirms": true}, "product": "ferrymq"},
			Mechanisms:       "PLAIN AMQPLAIN", Locales: "en_US"}},
	{name: "connection.start-ok", kind: kindMethod,
		raw:  methodPayload(10, 11, lenPrefixed(), ss("PLAIN"), ls("\x00guest\x00guest"), ss("en_US")),
		want: &ConnectionStartOk{ClientProperties: core.Table{}, Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"}},
	{name: "connection.tune", kind: kindMethod,
		raw:  methodPayload(10, 30, u16(2047), u32(131072), u16(60)),
		want: &ConnectionTune{ChannelMax: 2047, FrameMax: 131072, Heartbeat: 60}},
	{name: "connection.open", kind: kindMethod,
		raw:  methodPayload(10, 40, ss("/"), ss(""), u8(0)),
		want: &ConnectionOpen{VirtualHost: "/"}},
	{name: "connection.open reserved bit kept", kind: kindMethod,
		raw:  methodPayload(10, 40, ss("/"), ss("x"), u8(1)),
		want: &ConnectionOpen{VirtualHost: "/", Reserved1: "x", Reserved2: true}},
	{name: "connection.close", kind: kindMethod,
		raw:  methodPayload(10, 50, u16(504), ss("CHANNEL_ERROR - expected 'channel.open'"), u16(60), u16(40)),
		want: &ConnectionClose{ReplyCode: 504, ReplyText: "CHANNEL_ERROR - expected 'channel.open'", ClassID: 60, MethodID: 40}},
	{name: "connection.close-ok", kind: kindMethod, raw: methodPayload(10, 51), want: &ConnectionCloseOk{}},
	{name: "connection.blocked", kind: kindMethod,
		raw: methodPayload(10, 60, ss("low on memory")), want: &ConnectionBlocked{Reason: "low on memory"}},
	{name: "connection.update-secret", kind: kindMethod,
		raw:  methodPayload(10, 70, ls("token"), ss("refresh")),
		want: &ConnectionUpdateSecret{NewSecret: "token", Reason: "refresh"}},
	{name: "channel.open-ok longstr reserved", kind: kindMethod,
		raw: methodPayload(20, 11, ls("")), want: &ChannelOpenOk{}},
	{name: "channel.flow", kind: kindMethod, raw: methodPayload(20, 20, u8(1)), want: &ChannelFlow{Active: true}},
	{name: "exchange.declare bits", kind: kindMethod,
		raw: methodPayload(40, 10, u16(0), ss("logs"), ss("topic"), u8(0b10010), lenPrefixed(entry("alternate-exchange", 'S', ls("ae")))),
		want: &ExchangeDeclare{Exchange: "logs", Type: "topic", Durable: true, NoWait: true,
			Arguments: core.Table{"alternate-exchange": "ae"}}},
	{name: "exchange.declare all bits", kind: kindMethod,
		raw: methodPayload(40, 10, u16(0), ss("x"), ss("direct"), u8(0b11111), lenPrefixed()),
		want: &ExchangeDeclare{Exchange: "x", Type: "direct", Passive: true, Durable: true, AutoDelete: true,
			Internal: true, NoWait: true, Arguments: core.Table{}}},
	{name: "exchange.declare unused bits ignored", kind: kindMethod, decodeOnly: true,
		raw:  methodPayload(40, 10, u16(0), ss("x"), ss("direct"), u8(0b11100010), lenPrefixed()),
		want: &ExchangeDeclare{Exchange: "x", Type: "direct", Durable: true, Arguments: core.Table{}}},
	{name: "exchange.unbind-ok", kind: kindMethod, raw: methodPayload(40, 51), want: &ExchangeUnbindOk{}},
	{name: "queue.declare", kind: kindMethod,
		raw: methodPayload(50, 10, u16(0), ss("q"), u8(0b01010), lenPrefixed(entry("x-max-length", 'l', u64(10)))),
		want: &QueueDeclare{Queue: "q", Durable: true, AutoDelete: true,
			Arguments: core.Table{"x-max-length": int64(10)}}},
	{name: "queue.declare-ok", kind: kindMethod,
		raw: methodPayload(50, 11, ss("amq.gen-1"), u32(5), u32(1)), want: &QueueDeclareOk{Queue: "amq.gen-1", MessageCount: 5, ConsumerCount: 1}},
	{name: "queue.delete", kind: kindMethod,
		raw: methodPayload(50, 40, u16(0), ss("q"), u8(0b101)), want: &QueueDelete{Queue: "q", IfUnused: true, NoWait: true}},
	{name: "basic.qos", kind: kindMethod,
		raw: methodPayload(60, 10, u32(0), u16(100), u8(1)), want: &BasicQos{PrefetchCount: 100, Global: true}},
	{name: "basic.consume", kind: kindMethod,
		raw: methodPayload(60, 20, u16(0), ss("q"), ss("ctag"), u8(0b0110), lenPrefixed(entry("x-priority", 'I', u32(5)))),
		want: &BasicConsume{Queue: "q", ConsumerTag: "ctag", NoAck: true, Exclusive: true,
			Arguments: core.Table{"x-priority": int32(5)}}},
	{name: "basic.publish", kind: kindMethod,
		raw:  methodPayload(60, 40, u16(0), ss("amq.topic"), ss("a.b.c"), u8(0b01)),
		want: &BasicPublish{Exchange: "amq.topic", RoutingKey: "a.b.c", Mandatory: true}},
	{name: "basic.return", kind: kindMethod,
		raw:  methodPayload(60, 50, u16(312), ss("NO_ROUTE"), ss("ex"), ss("rk")),
		want: &BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", Exchange: "ex", RoutingKey: "rk"}},
	{name: "basic.deliver", kind: kindMethod,
		raw:  methodPayload(60, 60, ss("ctag"), u64(42), u8(1), ss(""), ss("q")),
		want: &BasicDeliver{ConsumerTag: "ctag", DeliveryTag: 42, Redelivered: true, RoutingKey: "q"}},
	{name: "basic.get-ok", kind: kindMethod,
		raw:  methodPayload(60, 71, u64(1), u8(0), ss("ex"), ss("rk"), u32(7)),
		want: &BasicGetOk{DeliveryTag: 1, Exchange: "ex", RoutingKey: "rk", MessageCount: 7}},
	{name: "basic.get-empty", kind: kindMethod, raw: methodPayload(60, 72, ss("")), want: &BasicGetEmpty{}},
	{name: "basic.ack multiple", kind: kindMethod,
		raw: methodPayload(60, 80, u64(0xFFFFFFFFFFFFFFFF), u8(1)), want: &BasicAck{DeliveryTag: 1<<64 - 1, Multiple: true}},
	{name: "basic.nack", kind: kindMethod,
		raw: methodPayload(60, 120, u64(9), u8(0b10)), want: &BasicNack{DeliveryTag: 9, Requeue: true}},
	{name: "basic.recover-async", kind: kindMethod, raw: methodPayload(60, 100, u8(1)), want: &BasicRecoverAsync{Requeue: true}},
	{name: "confirm.select nowait", kind: kindMethod, raw: methodPayload(85, 10, u8(1)), want: &ConfirmSelect{NoWait: true}},
	{name: "tx.select", kind: kindMethod, raw: methodPayload(90, 10), want: &TxSelect{}},
	{name: "tx.rollback-ok", kind: kindMethod, raw: methodPayload(90, 31), want: &TxRollbackOk{}},

	// Malformed methods.
	{name: "method payload shorter than ids", kind: kindMethod, raw: []byte{0, 60, 0}, err: ErrMalformed},
	{name: "unknown method", kind: kindMethod, raw: methodPayload(60, 999), err: ErrUnknownMethod},
	{name: "unknown class", kind: kindMethod, raw: methodPayload(70, 10), err: ErrUnknownMethod},
	{name: "truncated short", kind: kindMethod, raw: methodPayload(10, 30, u16(1), u32(2), u8(0)), err: ErrMalformed},
	{name: "truncated before bits", kind: kindMethod, raw: methodPayload(60, 40, u16(0), ss("ex"), ss("rk")), err: ErrMalformed},
	{name: "shortstr length over remaining", kind: kindMethod,
		raw: methodPayload(60, 40, u16(0), u8(200), []byte("abc")), err: ErrMalformed},
	{name: "longstr length 0xFFFFFFFF", kind: kindMethod,
		raw: methodPayload(10, 20, u32(0xFFFFFFFF), []byte("abc")), err: ErrMalformed},
	{name: "trailing bytes", kind: kindMethod, raw: methodPayload(60, 80, u64(1), u8(0), u8(0)), err: ErrMalformed},
	{name: "table length over remaining", kind: kindMethod,
		raw: methodPayload(50, 10, u16(0), ss("q"), u8(0), u32(100), entry("a", 'V')), err: ErrMalformed},
	{name: "bad tag in arguments", kind: kindMethod,
		raw: methodPayload(50, 10, u16(0), ss("q"), u8(0), lenPrefixed(entry("a", 'Z'))), err: ErrMalformed},

	// Content headers.
	{name: "header every property", kind: kindHeader, raw: allPropsRaw,
		want: header{ClassBasic, 5, allProps}},
	{name: "header no properties", kind: kindHeader,
		raw: cat(u16(60), u16(0), u64(0), u16(0)), want: header{ClassBasic, 0, core.Properties{}}},
	{name: "header present but empty", kind: kindHeader,
		raw:  cat(u16(60), u16(0), u64(3), u16(core.FlagContentType|core.FlagHeaders), ss(""), u32(0)),
		want: header{ClassBasic, 3, core.Properties{Headers: core.Table{}, Flags: core.FlagContentType | core.FlagHeaders}}},
	{name: "header persistent", kind: kindHeader,
		raw:  cat(u16(60), u16(0), u64(1<<40), u16(core.FlagDeliveryMode), u8(2)),
		want: header{ClassBasic, 1 << 40, core.Properties{DeliveryMode: 2, Flags: core.FlagDeliveryMode}}},
	{name: "header continuation bit", kind: kindHeader, raw: cat(u16(60), u16(0), u64(0), u16(1), u16(0)), err: ErrMalformed},
	{name: "header unknown flag bit", kind: kindHeader, raw: cat(u16(60), u16(0), u64(0), u16(2)), err: ErrMalformed},
	{name: "header nonzero weight", kind: kindHeader, raw: cat(u16(60), u16(1), u64(0), u16(0)), err: ErrMalformed},
	{name: "header truncated", kind: kindHeader, raw: cat(u16(60), u16(0), u64(0)), err: ErrMalformed},
	{name: "header property truncated", kind: kindHeader,
		raw: cat(u16(60), u16(0), u64(0), u16(core.FlagTimestamp), u32(1)), err: ErrMalformed},
	{name: "header trailing bytes", kind: kindHeader, raw: cat(u16(60), u16(0), u64(0), u16(0), u8(0)), err: ErrMalformed},

	// Frame streams.
	{name: "stream heartbeat", kind: kindStream, raw: rawFrame(FrameHeartbeat, 0, nil),
		want: []Frame{{Type: FrameHeartbeat, Payload: []byte{}}}, err: io.EOF},
	{name: "stream method then body", kind: kindStream,
		raw: cat(rawFrame(FrameMethod, 1, methodPayload(60, 80, u64(1), u8(0))), rawFrame(FrameBody, 65535, []byte("hi"))),
		want: []Frame{{Type: FrameMethod, Channel: 1, Payload: methodPayload(60, 80, u64(1), u8(0))},
			{Type: FrameBody, Channel: 65535, Payload: []byte("hi")}}, err: io.EOF},
	{name: "stream largest default frame", kind: kindStream,
		raw:  rawFrame(FrameBody, 1, make([]byte, FrameMinSize)),
		want: []Frame{{Type: FrameBody, Channel: 1, Payload: make([]byte, FrameMinSize)}}, err: io.EOF},
	{name: "stream frame too large", kind: kindStream,
		raw:  cat(rawFrame(FrameHeartbeat, 0, nil), u8(FrameBody), u16(1), u32(FrameMinSize+1)),
		want: []Frame{{Type: FrameHeartbeat, Payload: []byte{}}}, err: ErrFrameTooLarge},
	{name: "stream size 0xFFFFFFFF", kind: kindStream,
		raw: cat(u8(FrameMethod), u16(0), u32(0xFFFFFFFF), u8(FrameEnd)), err: ErrFrameTooLarge},
	{name: "stream bad frame end", kind: kindStream,
		raw: cat(u8(FrameBody), u16(1), u32(2), []byte("hi"), u8(0)), err: ErrBadFrameEnd},
	{name: "stream unknown frame type", kind: kindStream,
		raw: rawFrame(4, 1, []byte("x")), err: ErrUnknownFrameType},
	{name: "stream truncated header", kind: kindStream, raw: []byte{1, 0, 1, 0}, err: io.ErrUnexpectedEOF},
	{name: "stream truncated payload", kind: kindStream, raw: cat(u8(FrameBody), u16(1), u32(5), []byte("ab")), err: io.ErrUnexpectedEOF},
	{name: "stream missing frame end", kind: kindStream, raw: cat(u8(FrameBody), u16(1), u32(2), []byte("hi")), err: io.ErrUnexpectedEOF},
	{name: "stream protocol header is not a frame", kind: kindStream, raw: []byte(ProtocolHeader), err: ErrUnknownFrameType},
}

// decodeGolden decodes raw as the case's kind; streams are read whole.
func decodeGolden(kind goldenKind, raw []byte) (any, error) {
	switch kind {
	case kindMethod:
		return DecodeMethod(raw)
	case kindHeader:
		c, n, p, err := DecodeContentHeader(raw)
		return header{c, n, p}, err
	default:
		return readStream(NewReader(bytes.NewReader(raw)))
	}
}

// readStream reads frames until an error, copying payloads.
func readStream(r *Reader) ([]Frame, error) {
	var frames []Frame
	for {
		f, err := r.ReadFrame()
		if err != nil {
			return frames, err
		}
		f.Payload = append([]byte{}, f.Payload...)
		frames = append(frames, f)
	}
}

func encodeGolden(kind goldenKind, v any) ([]byte, error) {
	switch kind {
	case kindMethod:
		return AppendMethod(nil, v.(Method)), nil
	case kindHeader:
		h := v.(header)
		return AppendContentHeader(nil, h.classID, h.bodySize, &h.props), nil
	default:
		var b []byte
		for _, f := range v.([]Frame) {
			b = append(b, rawFrame(f.Type, f.Channel, f.Payload)...)
		}
		return b, nil
	}
}

func TestGoldenDecode(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeGolden(tc.kind, tc.raw)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if tc.err != nil && tc.kind != kindStream {
				var e *Error
				if !errors.As(err, &e) || e.Code == 0 {
					t.Fatalf("error %v is not a *wire.Error with a reply code", err)
				}
				return
			}
			if tc.kind == kindStream && tc.want == nil {
				tc.want = []Frame(nil)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("decoded\n%#v\nwant\n%#v", got, tc.want)
			}
		})
	}
}

func TestGoldenEncode(t *testing.T) {
	for _, tc := range goldenCases {
		if tc.want == nil || tc.decodeOnly {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			got, err := encodeGolden(tc.kind, tc.want)
			if err != nil {
				t.Fatal(err)
			}
			want := tc.raw
			if tc.kind == kindStream && tc.err != io.EOF {
				want = want[:len(got)] // the bytes of the good frames only
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encoded\n% x\nwant\n% x", got, want)
			}
		})
	}
}

// TestErrorCodes pins the reply code of each error kind and the ids a method
// error carries for connection.close.
func TestErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err  *Error
		code uint16
	}{
		{ErrFrameTooLarge, FrameError}, {ErrBadFrameEnd, FrameError}, {ErrUnknownFrameType, FrameError},
		{ErrMalformed, SyntaxError}, {ErrUnknownMethod, NotImplemented},
	} {
		if tc.err.Code != tc.code || !IsHardError(tc.code) {
			t.Errorf("%v: code %d, want hard error %d", tc.err, tc.err.Code, tc.code)
		}
	}
	_, err := DecodeMethod(methodPayload(60, 40, u16(0), u8(200)))
	var e *Error
	if !errors.As(err, &e) || e.ClassID != 60 || e.MethodID != 40 || e.Code != SyntaxError {
		t.Fatalf("got %#v", err)
	}
	if !strings.HasPrefix(e.Error(), "wire: basic.publish: malformed: ") {
		t.Errorf("text %q", e.Error())
	}
	_, err = DecodeMethod(methodPayload(60, 999))
	if !errors.As(err, &e) || e.ClassID != 60 || e.MethodID != 999 || e.Code != NotImplemented {
		t.Fatalf("got %#v", err)
	}
	if ReplyCodeName(NotFound) != "NOT_FOUND" || IsHardError(NotFound) || ReplyCodeName(1) != "" {
		t.Error("reply code helpers")
	}
}
