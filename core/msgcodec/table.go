package msgcodec

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// MaxTableDepth bounds how deeply tables and arrays may nest, on read and on
// write, so that hostile input (or a table that contains itself) cannot
// exhaust the goroutine stack. RabbitMQ's own arguments nest two or three
// levels; x-death is the deepest common case.
const MaxTableDepth = 64

// AppendTable appends t as an AMQP field table (a 32-bit byte length, then
// shortstr key, tag octet, value for each entry) and returns the extended
// buffer. Values use the tags of the core.Table mapping; for convenience int,
// uint and uint64 are written as 'l' (signed 64-bit) when they fit, and a
// map[string]any as 'F'.
//
// Keys are written in sorted order, so the output is deterministic. A table
// decoded by ReadTable therefore re-encodes byte-exact only if the peer sent
// its keys sorted; a map cannot remember the original order. Callers that must
// forward a table unchanged keep the raw bytes ReadTable consumed instead.
//
// On error the returned buffer is b with a partial table appended; discard it.
func AppendTable(b []byte, t core.Table) ([]byte, error) {
	return appendTable(b, t, 0)
}

func appendTable(b []byte, t core.Table, depth int) ([]byte, error) {
	if depth > MaxTableDepth {
		return b, fmt.Errorf("%w: nesting deeper than %d", ErrUnencodable, MaxTableDepth)
	}
	start := len(b)
	b = append(b, 0, 0, 0, 0)

	// Sort keys in a stack array so that small tables (the usual headers)
	// cost no allocation; larger ones spill to the heap once.
	var arr [16]string
	keys := arr[:0]
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)

	var err error
	for _, k := range keys {
		if len(k) > 255 {
			return b, fmt.Errorf("%w: key of %d bytes (max 255)", ErrUnencodable, len(k))
		}
		b = append(b, byte(len(k)))
		b = append(b, k...)
		if b, err = appendField(b, t[k], depth); err != nil {
			return b, fmt.Errorf("key %q: %w", k, err)
		}
	}
	return patchLength(b, start)
}

func appendArray(b []byte, a []any, depth int) ([]byte, error) {
	if depth > MaxTableDepth {
		return b, fmt.Errorf("%w: nesting deeper than %d", ErrUnencodable, MaxTableDepth)
	}
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	var err error
	for i, v := range a {
		if b, err = appendField(b, v, depth); err != nil {
			return b, fmt.Errorf("index %d: %w", i, err)
		}
	}
	return patchLength(b, start)
}

// patchLength writes the byte length of b[start+4:] into b[start:start+4].
func patchLength(b []byte, start int) ([]byte, error) {
	n := len(b) - start - 4
	if uint64(n) > math.MaxUint32 {
		return b, fmt.Errorf("%w: %d bytes do not fit a 32-bit length", ErrUnencodable, n)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(n))
	return b, nil
}

// appendField appends a tag octet and value; depth is that of the enclosing
// container.
func appendField(b []byte, v any, depth int) ([]byte, error) {
	switch v := v.(type) {
	case bool:
		if v {
			return append(b, 't', 1), nil
		}
		return append(b, 't', 0), nil
	case int8:
		return append(b, 'b', byte(v)), nil
	case uint8:
		return append(b, 'B', v), nil
	case int16:
		return appendShort(append(b, 's'), uint16(v)), nil
	case uint16:
		return appendShort(append(b, 'u'), v), nil
	case int32:
		return appendLong(append(b, 'I'), uint32(v)), nil
	case uint32:
		return appendLong(append(b, 'i'), v), nil
	case int64:
		return appendLonglong(append(b, 'l'), uint64(v)), nil
	case int:
		return appendLonglong(append(b, 'l'), uint64(int64(v))), nil
	case uint:
		if uint64(v) > math.MaxInt64 {
			return b, fmt.Errorf("%w: uint %d overflows signed 64-bit 'l'", ErrUnencodable, v)
		}
		return appendLonglong(append(b, 'l'), uint64(v)), nil
	case uint64:
		if v > math.MaxInt64 {
			return b, fmt.Errorf("%w: uint64 %d overflows signed 64-bit 'l'", ErrUnencodable, v)
		}
		return appendLonglong(append(b, 'l'), v), nil
	case float32:
		return appendLong(append(b, 'f'), math.Float32bits(v)), nil
	case float64:
		return appendLonglong(append(b, 'd'), math.Float64bits(v)), nil
	case core.Decimal:
		return appendLong(append(b, 'D', v.Scale), uint32(v.Value)), nil
	case string:
		if uint64(len(v)) > math.MaxUint32 {
			return b, fmt.Errorf("%w: string of %d bytes", ErrUnencodable, len(v))
		}
		return appendLongstr(append(b, 'S'), v), nil
	case []byte:
		if uint64(len(v)) > math.MaxUint32 {
			return b, fmt.Errorf("%w: byte array of %d bytes", ErrUnencodable, len(v))
		}
		b = appendLong(append(b, 'x'), uint32(len(v)))
		return append(b, v...), nil
	case []any:
		return appendArray(append(b, 'A'), v, depth+1)
	case time.Time:
		return appendTimestamp(append(b, 'T'), v), nil
	case core.Table:
		return appendTable(append(b, 'F'), v, depth+1)
	case map[string]any:
		return appendTable(append(b, 'F'), core.Table(v), depth+1)
	case nil:
		return append(b, 'V'), nil
	default:
		return b, fmt.Errorf("%w: Go type %T", ErrUnencodable, v)
	}
}

// ReadTable reads a field table from the start of b and returns it with the
// bytes that follow it. Every length is checked against the bytes that remain,
// unknown tags and nesting over MaxTableDepth are malformed (an *Error), and
// nothing in the result aliases b. A key that repeats keeps its last value
// (RabbitMQ keeps both; the map cannot).
//
// The tags read are those of the core.Table mapping, as RabbitMQ reads them:
// 's' is a signed 16-bit short, 'l' a signed 64-bit long, 'x' a byte array.
// 'L' is not accepted: RabbitMQ neither sends nor reads it.
func ReadTable(b []byte) (core.Table, []byte, error) {
	t, rest, err := readTable(b, 0)
	if err != nil {
		return nil, b, err
	}
	return t, rest, nil
}

// container returns the body of a length-prefixed table or array and the
// bytes after it.
func container(b []byte, what string, depth int) (body, rest []byte, err *Error) {
	if depth > MaxTableDepth {
		return nil, nil, malformed(what + " nested deeper than " + itoa(MaxTableDepth))
	}
	if len(b) < 4 {
		return nil, nil, malformed(what + " length truncated")
	}
	n := binary.BigEndian.Uint32(b)
	b = b[4:]
	if uint64(n) > uint64(len(b)) {
		return nil, nil, malformed(what + " length " + itoa(int(n)) + " exceeds " + itoa(len(b)) + " remaining bytes")
	}
	return b[:n:n], b[n:], nil
}

func readTable(b []byte, depth int) (core.Table, []byte, *Error) {
	body, rest, err := container(b, "table", depth)
	if err != nil {
		return nil, nil, err
	}
	t := make(core.Table)
	for len(body) > 0 {
		n := int(body[0])
		if n+1 > len(body) {
			return nil, nil, malformed("table key length " + itoa(n) + " exceeds " + itoa(len(body)-1) + " remaining bytes")
		}
		key := string(body[1 : 1+n])
		var v any
		if v, body, err = readField(body[1+n:], depth); err != nil {
			return nil, nil, err
		}
		t[key] = v
	}
	return t, rest, nil
}

func readArray(b []byte, depth int) ([]any, []byte, *Error) {
	body, rest, err := container(b, "array", depth)
	if err != nil {
		return nil, nil, err
	}
	// An empty array decodes to a non-nil slice so that it re-encodes as
	// 'A' with length 0 and compares equal to what was sent.
	a := []any{}
	for len(body) > 0 {
		var v any
		if v, body, err = readField(body, depth); err != nil {
			return nil, nil, err
		}
		a = append(a, v)
	}
	return a, rest, nil
}

// fixedSize is the value size of each fixed-width tag; 0 for the others.
var fixedSize = [256]uint8{
	't': 1, 'b': 1, 'B': 1, 's': 2, 'u': 2, 'I': 4, 'i': 4,
	'l': 8, 'f': 4, 'd': 8, 'D': 5, 'T': 8,
}

// readField reads a tag octet and value; depth is that of the enclosing
// container.
func readField(b []byte, depth int) (any, []byte, *Error) {
	if len(b) == 0 {
		return nil, nil, malformed("field tag truncated")
	}
	tag := b[0]
	b = b[1:]
	if n := int(fixedSize[tag]); n > len(b) {
		return nil, nil, malformed("field '" + string(rune(tag)) + "' needs " + itoa(n) + " bytes, " + itoa(len(b)) + " remain")
	}
	switch tag {
	case 't':
		return b[0] != 0, b[1:], nil
	case 'b':
		return int8(b[0]), b[1:], nil
	case 'B':
		return b[0], b[1:], nil
	case 's':
		return int16(binary.BigEndian.Uint16(b)), b[2:], nil
	case 'u':
		return binary.BigEndian.Uint16(b), b[2:], nil
	case 'I':
		return int32(binary.BigEndian.Uint32(b)), b[4:], nil
	case 'i':
		return binary.BigEndian.Uint32(b), b[4:], nil
	case 'l':
		return int64(binary.BigEndian.Uint64(b)), b[8:], nil
	case 'f':
		return math.Float32frombits(binary.BigEndian.Uint32(b)), b[4:], nil
	case 'd':
		return math.Float64frombits(binary.BigEndian.Uint64(b)), b[8:], nil
	case 'D':
		return core.Decimal{Scale: b[0], Value: int32(binary.BigEndian.Uint32(b[1:]))}, b[5:], nil
	case 'T':
		return time.Unix(int64(binary.BigEndian.Uint64(b)), 0).UTC(), b[8:], nil
	case 'S', 'x':
		body, rest, err := container(b, "field '"+string(rune(tag))+"'", 0)
		if err != nil {
			return nil, nil, err
		}
		if tag == 'S' {
			return string(body), rest, nil
		}
		return append([]byte{}, body...), rest, nil
	case 'A':
		return readArray(b, depth+1)
	case 'F':
		return readTable(b, depth+1)
	case 'V':
		return nil, b, nil
	default:
		return nil, nil, malformed("unknown field tag " + quoteByte(tag))
	}
}
