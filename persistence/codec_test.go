package persistence

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/ferrymq/ferrymq/core"
)

func TestNameEscaping(t *testing.T) {
	names := []string{"", "q", "a.b.c", "\x00", "\x01", "a\x00b", "a\x01\x02b", "\x00\x00\x01", "amq.gen-ÄÖ", "x\xff",
		strings.Repeat("\x00", longName), strings.Repeat("\x00", longName+1), longish("a\x01", 300), longish("a\x01", 301)}
	for _, name := range names {
		enc := appendName(nil, name)
		if bytes.IndexByte(enc[:len(enc)-1], 0) >= 0 {
			t.Errorf("%q escaped to %q, which holds NUL before the terminator", name, enc)
		}
		got, form, rest, ok := readName(append(enc, "tail"...))
		if long := len(name) > longName; long {
			if !ok || form != formHashed || string(rest) != "tail" || len(enc) > 2*hashedPrefix+2+64+1 {
				t.Errorf("%d-byte name: form %v, rest %q, ok %v, %d bytes", len(name), form, rest, ok, len(enc))
			}
			continue
		}
		if !ok || got != name || form != formPlain || string(rest) != "tail" {
			t.Errorf("%q: read back %q, form %v, rest %q, ok %v", name, got, form, rest, ok)
		}
	}
	// No terminated name is a prefix of another's: a queue's reference
	// prefix never matches another queue's keys.
	for _, a := range names {
		for _, b := range names {
			if a != b && bytes.HasPrefix(appendName(nil, b), appendName(nil, a)) {
				t.Errorf("%q's key prefix covers %q", a, b)
			}
		}
	}
}

func TestKeysRoundTrip(t *testing.T) {
	tests := []struct {
		vhost string
		b     core.BindingRecord
	}{
		{"/", core.BindingRecord{Source: "x", Destination: "q", RoutingKey: "k"}},
		{"v\x00h", core.BindingRecord{Source: "", Destination: "e\x01", ToExchange: true, RoutingKey: ""}},
	}
	for _, tt := range tests {
		args, _ := appendArgs(nil, tt.b.Arguments)
		vhost, b, _, ok := parseBindingKey(bindingKey(nil, tt.vhost, &tt.b, args))
		if !ok || vhost != tt.vhost || !reflect.DeepEqual(b, tt.b) {
			t.Errorf("binding %q %+v: parsed %q %+v %v", tt.vhost, tt.b, vhost, b, ok)
		}
	}
	vhost, queue, seq, _, ok := parseRefKey(refKey(nil, "v\x00", "q\x01", 1<<40))
	if !ok || vhost != "v\x00" || queue != "q\x01" || seq != 1<<40 {
		t.Errorf("ref key: %q %q %d %v", vhost, queue, seq, ok)
	}
	for _, r := range []ref{{id: 1}, {id: 1<<64 - 1, size: 1 << 30, priority: 255, deadline: -1}, {deadline: 1 << 62}} {
		if got, ok := decodeRef(encodeRef(nil, r)); !ok || got != r {
			t.Errorf("ref %+v: decoded %+v %v", r, got, ok)
		}
	}
}

func TestMessageCodec(t *testing.T) {
	m := richMessage(7, "body")
	enc, err := encodeMessage(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeMessage(7, enc)
	if err != nil {
		t.Fatal(err)
	}
	sameMessage(t, got, m)

	// Unpublished (zero time) stays zero.
	plain := plainMessage(8, 0, "")
	enc2, _ := encodeMessage(nil, plain)
	if got, err := decodeMessage(8, enc2); err != nil || !got.Published.IsZero() {
		t.Errorf("zero Published: %v, %v", got.Published, err)
	}

	// Damage is reported, never a panic or a silently wrong message.
	for cut := 0; cut < len(enc); cut++ {
		if _, err := decodeMessage(7, enc[:cut]); !errors.Is(err, errCorrupt) {
			t.Fatalf("message cut to %d bytes: %v, want errCorrupt", cut, err)
		}
	}

	// A headers value without an AMQP type fails this message only.
	bad := plainMessage(9, 0, "x")
	bad.Properties.Headers = core.Table{"ch": make(chan int)}
	if _, err := encodeMessage(nil, bad); err == nil {
		t.Error("encoding a channel in headers succeeded")
	}
}
