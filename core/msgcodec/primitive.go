package msgcodec

import (
	"encoding/binary"
	"time"
	"unicode/utf8"

	"github.com/ferrymq/ferrymq/core"
)

// decoder reads the primitive types of a property list by indexing into a
// byte slice. The first failure is sticky: later reads return zero values
// and leave err alone, so ReadProperties reads every property and checks
// err once at the end.
type decoder struct {
	b   []byte
	err *Error
}

// fail records the first error and empties the input so nothing else is read.
func (d *decoder) fail(text string) {
	if d.err == nil {
		d.err = malformed(text)
	}
	d.b = nil
}

func (d *decoder) octet() uint8 {
	if len(d.b) < 1 {
		d.fail("octet needs 1 bytes, 0 remain")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) longlong() uint64 {
	if len(d.b) < 8 {
		if d.err == nil {
			d.fail("longlong needs 8 bytes, " + itoa(len(d.b)) + " remain")
		}
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *decoder) shortstr() string {
	n := int(d.octet())
	if n > len(d.b) {
		if d.err == nil {
			d.fail("shortstr length " + itoa(n) + " exceeds " + itoa(len(d.b)) + " remaining bytes")
		}
		return ""
	}
	v := string(d.b[:n])
	d.b = d.b[n:]
	return v
}

// timestamp reads seconds since the epoch. The uint64 is reinterpreted as
// int64 so that re-encoding with Unix() gives back the same eight bytes.
func (d *decoder) timestamp() time.Time {
	return time.Unix(int64(d.longlong()), 0).UTC()
}

func (d *decoder) table() core.Table {
	if d.err != nil {
		return nil
	}
	t, rest, err := readTable(d.b, 0)
	if err != nil {
		d.err = err
		d.b = nil
		return nil
	}
	d.b = rest
	return t
}

// end fails if bytes are left over: accepting junk would break byte-exact
// round trips.
func (d *decoder) end() {
	if len(d.b) != 0 && d.err == nil {
		d.fail(itoa(len(d.b)) + " trailing bytes")
	}
}

func appendShort(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }

func appendLong(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

func appendLonglong(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// appendShortstr writes s as a shortstr. A string over 255 bytes is cut at
// the last UTF-8 boundary that fits rather than producing bytes no reader
// accepts; RabbitMQ does the same to long reply texts. Strings decoded here
// are never that long, so only text the broker made (an MQTT content type,
// say) can be cut.
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

// appendLongstr writes s as a longstr; its caller has checked that the
// length fits 32 bits.
func appendLongstr(b []byte, s string) []byte {
	b = appendLong(b, uint32(len(s)))
	return append(b, s...)
}

func appendTimestamp(b []byte, t time.Time) []byte { return appendLonglong(b, uint64(t.Unix())) }
