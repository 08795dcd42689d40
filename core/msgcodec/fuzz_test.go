package msgcodec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"testing"

	"github.com/ferrymq/ferrymq/core"
)

// Fuzz targets for the decoders, which read what peers send and what is on
// disk. Each is seeded from the golden table plus values built by this
// package's encoders, so `go test` runs the seeds as ordinary tests; `go test
// -fuzz` explores from there. The properties checked are the package's
// contracts: no panic, every error on bad input is an *Error, and whatever
// decodes re-encodes to the same value, byte-exact wherever the encoding is
// canonical.

// nestedProps are properties whose headers nest tables and arrays, as
// dead-lettering writes them.
var nestedProps = core.Properties{
	ContentType: "text/plain",
	Headers: core.Table{
		"x-death": []any{core.Table{
			"count": int64(2), "queue": "q", "reason": "expired",
			"routing-keys": []any{"a", "b"}, "time": ts(1700000002),
		}},
		"all": allTypesTable,
	},
	DeliveryMode: 2,
	Timestamp:    ts(1700000003),
}

func FuzzReadTable(f *testing.F) {
	for _, tc := range goldenCases {
		if tc.kind == kindTable {
			f.Add(tc.raw)
		}
	}
	for _, t := range []core.Table{allTypesTable, nestedProps.Headers, allProps.Headers, {}} {
		raw, err := AppendTable(nil, t)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
		f.Add(append(raw, 0xCE)) // bytes after the table are left over, not read
		f.Add(raw[:len(raw)/2])  // truncated
		f.Add(raw[:min(3, len(raw))])
	}
	f.Add([]byte{0xFF, 0xFF, 0xFF, 0xFF, 'a'})

	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data) // scribbled on below; the fuzzer owns data
		tab, rest, err := ReadTable(in)
		if err != nil {
			checkMalformed(t, err)
			if len(rest) != len(in) {
				t.Fatalf("ReadTable failed but returned %d of %d bytes as rest", len(rest), len(in))
			}
			return
		}
		if tab == nil {
			t.Fatal("ReadTable returned a nil table without error")
		}
		consumed := len(in) - len(rest)
		if consumed < 4 || !bytes.Equal(rest, data[consumed:]) {
			t.Fatalf("rest is not the %d bytes after the %d consumed", len(rest), consumed)
		}
		raw := data[:consumed]

		enc, err := AppendTable(nil, tab)
		if err != nil {
			t.Fatalf("a decoded table does not encode: %v", err)
		}
		if canonicalTable(raw) && !bytes.Equal(enc, raw) {
			t.Fatalf("canonical table re-encoded differently\n got % x\nwant % x", enc, raw)
		}
		clear(in) // the table must not alias its input
		tab2, rest2, err := ReadTable(enc)
		if err != nil || len(rest2) != 0 {
			t.Fatalf("re-encoded table: %v, %d bytes left over", err, len(rest2))
		}
		if !deepEqual(tab, tab2) {
			t.Fatalf("table changed on a round trip\n got %#v\nwant %#v", tab2, tab)
		}
		if enc2, _ := AppendTable(nil, tab2); !bytes.Equal(enc2, enc) {
			t.Fatalf("encoding is not stable\n got % x\nwant % x", enc2, enc)
		}
	})
}

func FuzzReadProperties(f *testing.F) {
	for _, tc := range goldenCases {
		if tc.kind == kindProperties {
			f.Add(tc.raw)
		}
	}
	for _, p := range []*core.Properties{&allProps, &nestedProps, {}, nil} {
		raw, err := AppendProperties(nil, p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
		f.Add(raw[:len(raw)-1])
		f.Add(append(raw, 0))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		p, err := ReadProperties(in)
		if err != nil {
			checkMalformed(t, err)
			return
		}
		if got := PropertyFlags(&p); got != p.Flags {
			t.Fatalf("PropertyFlags %#04x, flags read %#04x", got, p.Flags)
		}
		enc, err := AppendProperties(nil, &p)
		if err != nil {
			t.Fatalf("decoded properties do not encode: %v", err)
		}
		if canonicalProperties(data, p.Flags) && !bytes.Equal(enc, data) {
			t.Fatalf("properties re-encoded differently\n got % x\nwant % x", enc, data)
		}
		clear(in) // the properties must not alias the input
		p2, err := ReadProperties(enc)
		if err != nil {
			t.Fatalf("re-encoded properties do not decode: %v\n% x", err, enc)
		}
		if !deepEqual(p, p2) {
			t.Fatalf("properties changed on a round trip\n got %#v\nwant %#v", p2, p)
		}
		if enc2, _ := AppendProperties(nil, &p2); !bytes.Equal(enc2, enc) {
			t.Fatalf("encoding is not stable\n got % x\nwant % x", enc2, enc)
		}
	})
}

// checkMalformed checks that err is an *Error.
func checkMalformed(t *testing.T, err error) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *msgcodec.Error", err, err)
	}
}

// canonicalProperties reports whether the property list raw, which decoded
// without error with flags, is what AppendProperties writes: true unless its
// headers table is not canonical.
func canonicalProperties(raw []byte, flags uint16) bool {
	if flags&core.FlagHeaders == 0 {
		return true
	}
	off := 2
	if flags&core.FlagContentType != 0 {
		off += 1 + int(raw[off])
	}
	if flags&core.FlagContentEncoding != 0 {
		off += 1 + int(raw[off])
	}
	return canonicalTable(raw[off:])
}

// canonicalTable reports whether the field table at the start of raw, which
// ReadTable accepted, is byte for byte what AppendTable writes for it: keys in
// strictly increasing order (so no repeats) and every boolean 0 or 1, at
// every depth. Other input decodes fine but cannot round-trip byte-exact.
func canonicalTable(raw []byte) bool {
	body := raw[4 : 4+binary.BigEndian.Uint32(raw)]
	prev := ""
	for i := 0; len(body) > 0; i++ {
		n := int(body[0])
		key := string(body[1 : 1+n])
		if i > 0 && key <= prev {
			return false
		}
		prev = key
		var ok bool
		if body, ok = canonicalField(body[1+n:]); !ok {
			return false
		}
	}
	return true
}

// canonicalField is canonicalTable for one tagged value; it returns the bytes
// after the value.
func canonicalField(b []byte) ([]byte, bool) {
	tag, b := b[0], b[1:]
	switch tag {
	case 't':
		return b[1:], b[0] <= 1
	case 'S', 'x':
		return b[4+binary.BigEndian.Uint32(b):], true
	case 'F':
		n := 4 + binary.BigEndian.Uint32(b)
		return b[n:], canonicalTable(b[:n])
	case 'A':
		n := 4 + binary.BigEndian.Uint32(b)
		elems := b[4:n]
		for len(elems) > 0 {
			var ok bool
			if elems, ok = canonicalField(elems); !ok {
				return nil, false
			}
		}
		return b[n:], true
	default: // 'V' and the fixed-width tags
		return b[fixedSize[tag]:], true
	}
}

// deepEqual is reflect.DeepEqual except that a NaN equals a NaN: a table may
// carry NaN floats, and they must survive a round trip like any value. (The
// exact bits are checked by comparing encodings.)
func deepEqual(a, b any) bool { return equalValue(reflect.ValueOf(a), reflect.ValueOf(b)) }

func equalValue(a, b reflect.Value) bool {
	if !a.IsValid() || !b.IsValid() {
		return a.IsValid() == b.IsValid()
	}
	if a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.Float32, reflect.Float64:
		x, y := a.Float(), b.Float()
		return x == y || math.IsNaN(x) && math.IsNaN(y)
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return equalValue(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			if !equalValue(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Map:
		if a.IsNil() != b.IsNil() || a.Len() != b.Len() {
			return false
		}
		for it := a.MapRange(); it.Next(); {
			v := b.MapIndex(it.Key())
			if !v.IsValid() || !equalValue(it.Value(), v) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.IsNil() != b.IsNil() {
			return false
		}
		fallthrough
	case reflect.Array:
		if a.Len() != b.Len() {
			return false
		}
		for i := range a.Len() {
			if !equalValue(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	default: // bool, integers, strings
		return a.Equal(b)
	}
}
