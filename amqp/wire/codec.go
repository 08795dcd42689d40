package wire

import (
	"encoding/binary"
	"unicode/utf8"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/core/msgcodec"
)

// decoder reads AMQP primitive types by indexing into a byte slice. The first
// failure is sticky: later reads return zero values and leave err alone, so
// generated decoders read every field and check err once at the end.
type decoder struct {
	b   []byte
	err *Error
}

// fail records the first error and empties the input so nothing else is read.
func (d *decoder) fail(detail string) {
	if d.err == nil {
		d.err = newError(ErrMalformed, detail)
	}
	d.b = nil
}

func (d *decoder) truncated(what string, need int) {
	if d.err == nil {
		d.fail(what + " needs " + itoa(need) + " bytes, " + itoa(len(d.b)) + " remain")
	}
}

func (d *decoder) octet() uint8 {
	if len(d.b) < 1 {
		d.truncated("octet", 1)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) short() uint16 {
	if len(d.b) < 2 {
		d.truncated("short", 2)
		return 0
	}
	v := binary.BigEndian.Uint16(d.b)
	d.b = d.b[2:]
	return v
}

func (d *decoder) long() uint32 {
	if len(d.b) < 4 {
		d.truncated("long", 4)
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) longlong() uint64 {
	if len(d.b) < 8 {
		d.truncated("longlong", 8)
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// bytes returns the next n bytes without copying; callers copy what they keep.
func (d *decoder) bytes(what string, n uint64) []byte {
	if n > uint64(len(d.b)) {
		if d.err == nil {
			d.fail(what + " length " + itoa(int(min(n, 1<<32))) + " exceeds " + itoa(len(d.b)) + " remaining bytes")
		}
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) shortstr() string {
	n := d.octet()
	return string(d.bytes("shortstr", uint64(n)))
}

func (d *decoder) longstr() string {
	n := d.long()
	return string(d.bytes("longstr", uint64(n)))
}

func (d *decoder) table() core.Table {
	if d.err != nil {
		return nil
	}
	t, rest, err := msgcodec.ReadTable(d.b)
	if err != nil {
		d.err = malformed(err)
		d.b = nil
		return nil
	}
	d.b = rest
	return t
}

// end fails if bytes are left over: RabbitMQ's decoder matches the argument
// list exactly, and accepting junk would break byte-exact round trips.
func (d *decoder) end() {
	if len(d.b) != 0 && d.err == nil {
		d.fail(itoa(len(d.b)) + " trailing bytes")
	}
}

func appendShort(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }

func appendLong(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

func appendLonglong(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// appendShortstr writes s as a shortstr. A string over 255 bytes is cut at the
// last UTF-8 boundary that fits rather than producing a frame the peer must
// reject; RabbitMQ does the same to long reply texts. Strings decoded from the
// wire are never that long, so only server-made text can be cut.
func appendShortstr(b []byte, s string) []byte {
	if len(s) > 255 {
		n := 255
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n]
	}
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// appendLongstr writes s as a longstr. Strings over 4 GiB cannot be framed
// (frame sizes are 32-bit), so no length check is needed beyond that.
func appendLongstr(b []byte, s string) []byte {
	b = appendLong(b, uint32(len(s)))
	return append(b, s...)
}

// appendTableInArgs encodes a table inside method arguments, whose Append
// has no error result. A value whose Go type is outside the core.Table
// mapping is a bug in the code that built the table (tables decoded here
// always encode), so it panics, like an out-of-range index would.
func appendTableInArgs(b []byte, t core.Table) []byte {
	b, err := msgcodec.AppendTable(b, t)
	if err != nil {
		panic(err)
	}
	return b
}
