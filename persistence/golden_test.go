package persistence

import (
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// The golden records pin the on-disk format: every kind of key and value a
// data directory holds, as fixed bytes. Each case encodes its value and must
// get exactly these bytes, and decodes these bytes and must get exactly its
// value. A failure here means existing data directories would be misread
// (or written differently): that takes a new formatVersion and a migration,
// never an edit of the bytes below.

// hx decodes hex written in annotated groups; spaces are ignored.
func hx(groups ...string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(strings.Join(groups, ""), " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// goldenHeaders holds one value of every field type a table can hold,
// with tables and arrays nested in each other as dead-lettering writes
// them; keys sort in the order written below.
var goldenHeaders = core.Table{
	"A": []any{int32(1), "two", nil, []any{false}, core.Table{"k": int64(3)}},
	"B": uint8(200),
	"D": core.Decimal{Scale: 2, Value: -12345},
	"F": core.Table{"inner": core.Table{"deep": "yes"}},
	"I": int32(-5),
	"S": "héllo",
	"T": time.Unix(1700000000, 0).UTC(),
	"V": nil,
	"b": int8(-2),
	"d": float64(3.5),
	"f": float32(-1.25),
	"i": uint32(4000000000),
	"l": int64(-1 << 40),
	"s": int16(-300),
	"t": true,
	"u": uint16(65000),
	"x": []byte{0, 1, 255},
	"x-death": []any{core.Table{
		"count": int64(1), "queue": "q", "reason": "rejected",
		"routing-keys": []any{"rk"}, "time": time.Unix(1600000000, 0).UTC(),
	}},
}

var goldenHeadersRaw = hx(
	"00000121", // table length
	"01 41 41 00000025", "49 00000001", "53 00000003 74776f", "56", "41 00000002 7400", "46 0000000b 016b 6c 0000000000000003",
	"01 42 42 c8",
	"01 44 44 02 ffffcfc7",
	"01 46 46 00000018 05696e6e6572 46 0000000d 0464656570 53 00000003 796573",
	"01 49 49 fffffffb",
	"01 53 53 00000006 68c3a96c6c6f",
	"01 54 54 000000006553f100",
	"01 56 56",
	"01 62 62 fe",
	"01 64 64 400c000000000000",
	"01 66 66 bfa00000",
	"01 69 69 ee6b2800",
	"01 6c 6c ffffff0000000000",
	"01 73 73 fed4",
	"01 74 74 01",
	"01 75 75 fde8",
	"01 78 78 00000003 0001ff",
	"07 782d6465617468 41 0000005b 46 00000056",
	// x-death's one table:
	"05 636f756e74 6c 0000000000000001",
	"05 7175657565 53 00000001 71",
	"06 726561736f6e 53 00000008 72656a6563746564",
	"0c 726f7574696e672d6b657973 41 00000007 53 00000002 726b",
	"04 74696d65 54 000000005f5e1000",
)

// goldenMessage has every property set, headers of every field type, and
// a property present but empty (cluster-id: its flag alone).
var goldenMessage = &core.Message{
	ID:         0x0102030405060708,
	Exchange:   "amq.topic",
	RoutingKey: "a.b.c",
	Published:  time.Unix(1700000000, 123456789),
	Body:       []byte("body"),
	Properties: core.Properties{
		ContentType:     "application/json",
		ContentEncoding: "gzip",
		Headers:         goldenHeaders,
		DeliveryMode:    2,
		Priority:        7,
		CorrelationID:   "corr",
		ReplyTo:         "amq.rabbitmq.reply-to",
		Expiration:      "60000",
		MessageID:       "mid-1",
		Timestamp:       time.Unix(1700000001, 0).UTC(),
		Type:            "t",
		UserID:          "guest",
		AppID:           "app",
		Flags:           0xfffc,
	},
}

var goldenMessageRaw = hx(
	"01",                                  // record version
	"01",                                  // flags: Published set
	"17979cfe3d85cd15",                    // Published, UnixNano
	"09 616d712e746f706963",               // exchange
	"05 612e622e63",                       // routing key
	"8703",                                // content header length (uvarint 391)
	"003c 0000 0000000000000004",          // class 60, weight 0, body size 4
	"fffc",                                // property flags: all 14
	"10 6170706c69636174696f6e2f6a736f6e", // content-type
	"04 677a6970",                         // content-encoding
	hex.EncodeToString(goldenHeadersRaw),  // headers
	"02",                                  // delivery-mode
	"07",                                  // priority
	"04 636f7272",                         // correlation-id
	"15 616d712e7261626269746d712e7265706c792d746f", // reply-to
	"05 3630303030",    // expiration
	"05 6d69642d31",    // message-id
	"000000006553f101", // timestamp
	"01 74",            // type
	"05 6775657374",    // user-id
	"03 617070",        // app-id
	"00",               // cluster-id, present but empty
	"626f6479",         // body
)

type goldenRecord struct {
	name     string
	key, val []byte
	encode   func() (key, val []byte, err error)
	decode   func(key, val []byte) (any, error)
	want     any
}

func goldenRecords() []goldenRecord {
	exchange := func(vhost string, d core.ExchangeDecl) goldenRecord {
		return goldenRecord{
			encode: func() ([]byte, []byte, error) {
				val, err := encodeExchange(nil, &d)
				return entityKey(nil, kindExchange, vhost, d.Name), named(nil, val, vhost, d.Name), err
			},
			decode: func(key, val []byte) (any, error) {
				vh, d, err := decodeExchange(key, val)
				return []any{vh, d}, err
			},
			want: []any{vhost, d},
		}
	}
	queue := func(r core.QueueRecord) goldenRecord {
		return goldenRecord{
			encode: func() ([]byte, []byte, error) {
				val, err := encodeQueue(nil, &r)
				return entityKey(nil, kindQueue, r.VHost, r.Name), named(nil, val, r.VHost, r.Name), err
			},
			decode: func(key, val []byte) (any, error) { return decodeQueue(key, val) },
			want:   r,
		}
	}
	binding := func(vhost string, r core.BindingRecord) goldenRecord {
		return goldenRecord{
			encode: func() ([]byte, []byte, error) {
				val, err := encodeBinding(nil, &r)
				return bindingKey(nil, vhost, &r, val[1:]), named(nil, val, vhost, r.Source, r.Destination, r.RoutingKey), err
			},
			decode: func(key, val []byte) (any, error) {
				vh, r, err := decodeBinding(key, val)
				return []any{vh, r}, err
			},
			want: []any{vhost, r},
		}
	}
	msg := func(m *core.Message) goldenRecord {
		return goldenRecord{
			encode: func() ([]byte, []byte, error) {
				val, err := encodeMessage(nil, m)
				return messageKey(nil, m.ID), val, err
			},
			decode: func(key, val []byte) (any, error) {
				id, ok := parseMessageKey(key)
				if !ok {
					return nil, errCorrupt
				}
				return decodeMessage(id, val)
			},
			want: m,
		}
	}
	type retained struct {
		vhost, topic string
		m            *core.Message
	}

	cases := []goldenRecord{}
	add := func(name string, key, val []byte, r goldenRecord) {
		r.name, r.key, r.val = name, key, val
		cases = append(cases, r)
	}

	add("format version", hx("21 666f726d6174"), hx("01"), goldenRecord{
		encode: func() ([]byte, []byte, error) { return formatKey, []byte{formatVersion}, nil },
		decode: func(key, val []byte) (any, error) { return val, nil },
		want:   []byte{1},
	})

	add("crash mark", hx("21 72756e6e696e67"), nil, goldenRecord{
		encode: func() ([]byte, []byte, error) { return runningKey, nil, nil },
		decode: func(key, val []byte) (any, error) { return len(val), nil },
		want:   0,
	})

	add("exchange with arguments",
		hx("78 2f", "2f 00", "6c6f6773 00"),
		hx("01", "05", "05 746f706963", "0000001a 12 616c7465726e6174652d65786368616e6765 53 00000002 6165"),
		exchange("/", core.ExchangeDecl{Name: "logs", Kind: "topic", Durable: true, Internal: true,
			Arguments: core.Table{"alternate-exchange": "ae"}}))
	add("exchange names with NUL and 0x01",
		hx("78 2f", "76 0101 68 00", "61 0102 62 00"),
		hx("01", "02", "07 68656164657273", "00000000"),
		exchange("v\x00h", core.ExchangeDecl{Name: "a\x01b", Kind: "headers", AutoDelete: true}))

	add("queue with arguments",
		hx("71 2f", "2f 00", "6f7264657273 00"),
		hx("01", "00", "17979cfe362a0000",
			"00000072",
			"16 782d646561642d6c65747465722d65786368616e6765 53 00000003 646c78",
			"0c 782d6d61782d6c656e677468 6c 00000000000003e8",
			"0e 782d6d61782d7072696f72697479 42 09",
			"0d 782d6d6573736167652d74746c 49 0000ea60",
			"0c 782d71756575652d74797065 53 00000007 636c6173736963"),
		queue(core.QueueRecord{VHost: "/", Name: "orders", LastUsed: 1700000000000000000, Arguments: core.Table{
			"x-dead-letter-exchange": "dlx", "x-max-length": int64(1000), "x-max-priority": uint8(9),
			"x-message-ttl": int32(60000), "x-queue-type": "classic",
		}}))
	add("queue of an MQTT session",
		hx("71 2f", "2f 00", "6d7174742d737562736372697074696f6e2d6331716f7331 00"),
		hx("01", "01", "0000000000000000", "00000013 09 782d65787069726573 6c 000000000036ee80"),
		queue(core.QueueRecord{VHost: "/", Name: "mqtt-subscription-c1qos1", AutoDelete: true,
			Arguments: core.Table{"x-expires": int64(3600000)}}))

	// A name over 255 bytes is hashed in the key and kept in the value.
	longQ := "c/" + strings.Repeat("n", 298)
	add("queue with a long name",
		hx("71 2f", "2f 00", hex.EncodeToString([]byte(longQ[:32])), "0103",
			hex.EncodeToString([]byte("b4a28c5223b720ae31ff9b7caad3f043f55d6d718adab553210575da5bbbfb01")), "00"),
		hx("02", "02", "01 2f", "ac02", hex.EncodeToString([]byte(longQ)),
			"01", "00", "0000000000000000", "00000000"),
		queue(core.QueueRecord{VHost: "/", Name: longQ}))
	add("binding with a long routing key",
		hx("62 2f", "2f 00", "616d712e746f706963 00", "71 00", "71 00", hex.EncodeToString([]byte(longQ[:32])), "0103",
			hex.EncodeToString([]byte("b4a28c5223b720ae31ff9b7caad3f043f55d6d718adab553210575da5bbbfb01")), "00", "4d25767f9dce13f5"),
		hx("02", "04", "01 2f", "09 616d712e746f706963", "01 71", "ac02", hex.EncodeToString([]byte(longQ)),
			"01", "00000000"),
		binding("/", core.BindingRecord{Source: "amq.topic", Destination: "q", RoutingKey: longQ}))

	add("binding of a queue",
		hx("62 2f", "2f 00", "616d712e646972656374 00", "71 00", "6f7264657273 00", "6e6577 00", "4d25767f9dce13f5"),
		hx("01", "00000000"),
		binding("/", core.BindingRecord{Source: "amq.direct", Destination: "orders", RoutingKey: "new"}))
	add("binding of an MQTT subscription",
		hx("62 2f", "2f 00", "616d712e746f706963 00", "71 00", "6d7174742d737562736372697074696f6e2d6331716f7331 00",
			"612e2a2e23 00", "3bffa93be355a2e0"),
		hx("01", "00000053",
			"0d 782d6d7174742d66696c746572 53 00000005 612f2b2f23",
			"0f 782d6d7174742d6e6f2d6c6f63616c 74 01",
			"0a 782d6d7174742d716f73 62 01",
			"16 782d6d7174742d737562736372697074696f6e2d6964 49 00000007"),
		binding("/", core.BindingRecord{Source: "amq.topic", Destination: "mqtt-subscription-c1qos1", RoutingKey: "a.*.#",
			Arguments: core.Table{"x-mqtt-filter": "a/+/#", "x-mqtt-no-local": true, "x-mqtt-qos": int8(1),
				"x-mqtt-subscription-id": int32(7)}}))
	add("binding of an exchange",
		hx("62 2f", "76 00", "7372 00", "65 00", "647374 00", "00", "edc1525c8f0ec3b4"),
		hx("01", "00000010 07 782d6d61746368 53 00000003 616e79"),
		binding("v", core.BindingRecord{Source: "sr", Destination: "dst", ToExchange: true,
			Arguments: core.Table{"x-match": "any"}}))

	add("message with every property", hx("6d 2f", "0102030405060708"), goldenMessageRaw, msg(goldenMessage))
	add("message without properties",
		hx("6d 2f", "0000000000000009"),
		hx("01", "00", "0000000000000000", "00", "01 71", "0e", "003c 0000 0000000000000000 0000"),
		msg(&core.Message{ID: 9, RoutingKey: "q"}))

	add("message reference",
		hx("72 2f", "2f 00", "6f7264657273 00", "0000010000000001"),
		hx("01", "0102030405060708", "07", "80808001", "01"),
		goldenRecord{
			encode: func() ([]byte, []byte, error) {
				return refKey(nil, "/", "orders", 1<<40+1),
					encodeRef(nil, ref{id: 0x0102030405060708, size: 1 << 21, priority: 7, deadline: -1}), nil
			},
			decode: func(key, val []byte) (any, error) {
				vhost, queue, seq, _, ok := parseRefKey(key)
				r, ok2 := decodeRef(val)
				if !ok || !ok2 {
					return nil, errCorrupt
				}
				return []any{vhost, queue, seq, r}, nil
			},
			want: []any{"/", "orders", uint64(1<<40 + 1), ref{id: 0x0102030405060708, size: 1 << 21, priority: 7, deadline: -1}},
		})

	add("delivered mark",
		hx("64 2f", "2f 00", "6f7264657273 00"),
		hx("000000000000002a"),
		goldenRecord{
			encode: func() ([]byte, []byte, error) {
				return entityKey(nil, kindDelivered, "/", "orders"), encodeDelivered(nil, 42), nil
			},
			decode: func(key, val []byte) (any, error) {
				vhost, queue, _, ok := parseEntityKey(key)
				seq, ok2 := decodeDelivered(val)
				if !ok || !ok2 {
					return nil, errCorrupt
				}
				return []any{vhost, queue, seq}, nil
			},
			want: []any{"/", "orders", uint64(42)},
		})

	retainedMsg := &core.Message{ID: 77, Exchange: "amq.topic", RoutingKey: "home.temp",
		Published: time.Unix(1700000002, 0), Body: []byte("21.5"),
		Properties: core.Properties{DeliveryMode: 2, Headers: core.Table{
			"x-mqtt-publish-qos": int8(1), "x-mqtt-retain": true, "x-mqtt-payload-format-indicator": uint8(1),
		}, Flags: core.FlagHeaders | core.FlagDeliveryMode}}
	add("retained message",
		hx("74 2f", "2f 00", "686f6d652f74656d70 00"),
		hx("01", "000000000000004d",
			"01", "01", "17979cfead5f9400", "09 616d712e746f706963", "09 686f6d652e74656d70",
			"5a", "003c 0000 0000000000000004 3000",
			"00000047",
			"1f 782d6d7174742d7061796c6f61642d666f726d61742d696e64696361746f72 42 01",
			"12 782d6d7174742d7075626c6973682d716f73 62 01",
			"0d 782d6d7174742d72657461696e 74 01",
			"02",
			"32312e35"),
		goldenRecord{
			encode: func() ([]byte, []byte, error) {
				val, err := encodeRetained(nil, retainedMsg)
				return entityKey(nil, kindRetained, "/", "home/temp"), val, err
			},
			decode: func(key, val []byte) (any, error) {
				vhost, topic, m, err := decodeRetained(key, val)
				return retained{vhost, topic, m}, err
			},
			want: retained{"/", "home/temp", retainedMsg},
		})
	return cases
}

func TestGoldenRecords(t *testing.T) {
	for _, tc := range goldenRecords() {
		t.Run(tc.name, func(t *testing.T) {
			key, val, err := tc.encode()
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if string(key) != string(tc.key) {
				t.Errorf("key\n got %x\nwant %x", key, tc.key)
			}
			if string(val) != string(tc.val) {
				t.Errorf("value\n got %x\nwant %x", val, tc.val)
			}
			got, err := tc.decode(tc.key, tc.val)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("decoded\n%#v\nwant\n%#v", got, tc.want)
			}
		})
	}
}
