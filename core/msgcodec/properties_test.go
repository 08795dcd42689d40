package msgcodec

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/ferrymq/ferrymq/core"
)

// TestPropertyFlagsMerge covers the Flags rule: bits read are kept, a field
// set afterwards is written too, and bits that name no property never are.
func TestPropertyFlagsMerge(t *testing.T) {
	p, err := ReadProperties(cat(u16(core.FlagContentType), ss("")))
	if err != nil {
		t.Fatal(err)
	}
	p.Headers = core.Table{"x-first-death-reason": "rejected"}
	b, err := AppendProperties(nil, &p)
	if err != nil {
		t.Fatal(err)
	}
	q, err := ReadProperties(b)
	if err != nil {
		t.Fatal(err)
	}
	if q.Flags != core.FlagContentType|core.FlagHeaders || q.Headers["x-first-death-reason"] != "rejected" {
		t.Fatalf("got %+v", q)
	}
	if f := PropertyFlags(&core.Properties{Flags: 0x0003}); f != 0 {
		t.Fatalf("flags %#x", f)
	}
	if b, err := AppendProperties(nil, nil); err != nil || !bytes.Equal(b, u16(0)) {
		t.Fatalf("nil properties: % x %v", b, err)
	}
}

// TestAppendPropertiesCutsLongText: a short string over 255 bytes (an MQTT
// content type may be) is cut at the last rune boundary that fits, so that
// what is written can be read back.
func TestAppendPropertiesCutsLongText(t *testing.T) {
	long := strings.Repeat("é", 128) // 256 bytes
	b, err := AppendProperties(nil, &core.Properties{ContentType: long})
	if err != nil {
		t.Fatal(err)
	}
	if want := cat(u16(core.FlagContentType), ss(strings.Repeat("é", 127))); !bytes.Equal(b, want) {
		t.Fatalf("encoded % x\nwant % x", b, want)
	}
}

func TestAppendPropertiesUnencodableHeaders(t *testing.T) {
	_, err := AppendProperties(nil, &core.Properties{Headers: core.Table{"ch": make(chan int)}})
	if !errors.Is(err, ErrUnencodable) {
		t.Fatalf("got %v, want ErrUnencodable", err)
	}
}
