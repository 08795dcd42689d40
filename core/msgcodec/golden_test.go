package msgcodec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// The golden table, mochi style: each case is raw bytes, the value they
// decode to, and whether they are malformed. Decode tests read raw and
// compare with want; encode tests encode want and compare with raw (unless
// decodeOnly); the fuzz targets take raw as their seed corpus.

type goldenKind int

const (
	kindTable      goldenKind = iota // raw is a field table, want a core.Table
	kindProperties                   // raw is a property list, want core.Properties
)

type golden struct {
	name      string
	kind      goldenKind
	raw       []byte
	want      any
	malformed bool
	// decodeOnly marks raw that decodes to want but is not what the encoder
	// writes for want (unsorted keys, repeated keys).
	decodeOnly bool
}

// Byte builders, so that the raw side of each case reads like the spec.
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
func ts(sec int64) time.Time { return time.Unix(sec, 0).UTC() }

// allTypesTable holds one value of every tag, keyed by its tag so that the
// sorted key order is the order of allTypesRaw.
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

var allTypesRaw = lenPrefixed(
	entry("A", 'A', lenPrefixed(
		u8('I'), u32(1),
		u8('S'), ls("two"),
		u8('V'),
		u8('A'), u32(0),
		u8('F'), u32(0),
	)),
	entry("B", 'B', u8(0xFE)),
	entry("D", 'D', u8(2), u32(uint32(0xFFFFFFFF-12345+1))),
	entry("F", 'F', lenPrefixed(entry("inner", 't', u8(1)))),
	entry("I", 'I', u32(0xFFFFFFFB)),
	entry("S", 'S', ls("longstr")),
	entry("T", 'T', u64(1700000000)),
	entry("V", 'V'),
	entry("b", 'b', u8(0xFE)),
	entry("d", 'd', u64(0x400C000000000000)),
	entry("f", 'f', u32(0xBFA00000)),
	entry("i", 'i', u32(4000000000)),
	entry("l", 'l', u64(0xFFFFFF0000000000)),
	entry("s", 's', u16(0xFED4)),
	entry("t", 't', u8(1)),
	entry("u", 'u', u16(65000)),
	entry("x", 'x', u32(3), []byte{0, 1, 2}),
)

// nested returns a table nested n levels deep: {"n": {"n": ... {}}}.
func nested(n int) ([]byte, core.Table) {
	raw, t := lenPrefixed(), core.Table{}
	for range n {
		raw, t = lenPrefixed(entry("n", 'F', raw)), core.Table{"n": t}
	}
	return raw, t
}

var (
	deepRaw, deepTable = nested(MaxTableDepth) // the deepest accepted
	tooDeepRaw, _      = nested(MaxTableDepth + 1)
)

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
	u16(0xFFFC),
	ss("application/json"), ss("gzip"),
	lenPrefixed(entry("x-death", 'A', lenPrefixed(u8('F'), lenPrefixed(entry("count", 'l', u64(1)))))),
	u8(2), u8(9), ss("corr"), ss("amq.rabbitmq.reply-to"), ss("60000"), ss("msg-1"),
	u64(1700000001), ss("order.created"), ss("guest"), ss("app"), ss("cluster"),
)

var goldenCases = []golden{
	// Field tables.
	{name: "table empty", kind: kindTable, raw: u32(0), want: core.Table{}},
	{name: "table every type", kind: kindTable, raw: allTypesRaw, want: allTypesTable},
	{name: "table nested to the limit", kind: kindTable, raw: deepRaw, want: deepTable},
	{name: "table unsorted keys", kind: kindTable, decodeOnly: true,
		raw: lenPrefixed(entry("b", 't', u8(0)), entry("a", 't', u8(1))), want: core.Table{"a": true, "b": false}},
	{name: "table duplicate key keeps last", kind: kindTable, decodeOnly: true,
		raw: lenPrefixed(entry("a", 'I', u32(1)), entry("a", 'I', u32(2))), want: core.Table{"a": int32(2)}},
	{name: "table bad tag", kind: kindTable, raw: lenPrefixed(entry("a", 'Z')), malformed: true},
	{name: "table tag L not accepted", kind: kindTable, raw: lenPrefixed(entry("a", 'L', u64(1))), malformed: true},
	{name: "table length over remaining", kind: kindTable, raw: cat(u32(10), entry("a", 'V')), malformed: true},
	{name: "table length 0xFFFFFFFF", kind: kindTable, raw: cat(u32(0xFFFFFFFF), entry("a", 'V')), malformed: true},
	{name: "table length truncated", kind: kindTable, raw: []byte{0, 0}, malformed: true},
	{name: "table key over remaining", kind: kindTable, raw: lenPrefixed(u8(9), []byte("ab")), malformed: true},
	{name: "table missing tag", kind: kindTable, raw: lenPrefixed(ss("a")), malformed: true},
	{name: "table truncated value", kind: kindTable, raw: lenPrefixed(entry("a", 'l', u32(1))), malformed: true},
	{name: "table longstr over remaining", kind: kindTable, raw: lenPrefixed(entry("a", 'S', u32(0xFFFFFFFF))), malformed: true},
	{name: "table byte array over remaining", kind: kindTable, raw: lenPrefixed(entry("a", 'x', u32(5), u8(1))), malformed: true},
	{name: "table array over remaining", kind: kindTable, raw: lenPrefixed(entry("a", 'A', u32(5), u8('V'))), malformed: true},
	{name: "table nested too deep", kind: kindTable, raw: tooDeepRaw, malformed: true},

	// Property lists.
	{name: "properties every one", kind: kindProperties, raw: allPropsRaw, want: allProps},
	{name: "properties none", kind: kindProperties, raw: u16(0), want: core.Properties{}},
	{name: "properties present but empty", kind: kindProperties,
		raw:  cat(u16(core.FlagContentType|core.FlagHeaders), ss(""), u32(0)),
		want: core.Properties{Headers: core.Table{}, Flags: core.FlagContentType | core.FlagHeaders}},
	{name: "properties persistent", kind: kindProperties,
		raw: cat(u16(core.FlagDeliveryMode), u8(2)), want: core.Properties{DeliveryMode: 2, Flags: core.FlagDeliveryMode}},
	{name: "properties continuation bit", kind: kindProperties, raw: cat(u16(1), u16(0)), malformed: true},
	{name: "properties unknown flag bit", kind: kindProperties, raw: u16(2), malformed: true},
	{name: "properties flags truncated", kind: kindProperties, raw: u8(0), malformed: true},
	{name: "properties truncated", kind: kindProperties, raw: cat(u16(core.FlagTimestamp), u32(1)), malformed: true},
	{name: "properties shortstr over remaining", kind: kindProperties, raw: cat(u16(core.FlagAppID), u8(3), []byte("ab")), malformed: true},
	{name: "properties bad headers", kind: kindProperties, raw: cat(u16(core.FlagHeaders), lenPrefixed(entry("a", 'Z'))), malformed: true},
	{name: "properties trailing bytes", kind: kindProperties, raw: cat(u16(0), u8(0)), malformed: true},
}

func decodeGolden(kind goldenKind, raw []byte) (any, error) {
	if kind == kindProperties {
		return ReadProperties(raw)
	}
	t, rest, err := ReadTable(raw)
	if err == nil && len(rest) != 0 {
		return t, errors.New("table left bytes over")
	}
	return t, err
}

func encodeGolden(kind goldenKind, v any) ([]byte, error) {
	if kind == kindProperties {
		p := v.(core.Properties)
		return AppendProperties(nil, &p)
	}
	return AppendTable(nil, v.(core.Table))
}

func TestGoldenDecode(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeGolden(tc.kind, tc.raw)
			if tc.malformed {
				var e *Error
				if !errors.As(err, &e) {
					t.Fatalf("error %v (%T), want an *Error", err, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("decoded\n%#v\nwant\n%#v", got, tc.want)
			}
		})
	}
}

func TestGoldenEncode(t *testing.T) {
	for _, tc := range goldenCases {
		if tc.malformed || tc.decodeOnly {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			got, err := encodeGolden(tc.kind, tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.raw) {
				t.Fatalf("encoded\n% x\nwant\n% x", got, tc.raw)
			}
		})
	}
}
