package msgcodec

import (
	"errors"
	"reflect"
	"testing"

	"github.com/ferrymq/ferrymq/core"
)

func TestAppendTableConveniences(t *testing.T) {
	b, err := AppendTable(nil, core.Table{"a": 7, "b": uint(8), "c": uint64(9), "d": map[string]any{"e": "f"}})
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := ReadTable(b)
	if err != nil {
		t.Fatal(err)
	}
	want := core.Table{"a": int64(7), "b": int64(8), "c": int64(9), "d": core.Table{"e": "f"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%v", got)
	}
	for _, bad := range []core.Table{
		{"a": uint64(1 << 63)},
		{"a": struct{}{}},
		{"a": []string{"no"}},
		{string(make([]byte, 256)): 1},
	} {
		if _, err := AppendTable(nil, bad); !errors.Is(err, ErrUnencodable) {
			t.Fatalf("%v: %v", bad, err)
		}
	}
	loop := []any{nil}
	loop[0] = loop
	if _, err := AppendTable(nil, core.Table{"loop": loop}); !errors.Is(err, ErrUnencodable) {
		t.Fatalf("self-referencing array: %v", err)
	}
	tab, rest, err := ReadTable(cat(lenPrefixed(entry("a", 'A', lenPrefixed(u8('t'), u8(1), u8('V')))), []byte("tail")))
	if err != nil || !reflect.DeepEqual(tab, core.Table{"a": []any{true, nil}}) || string(rest) != "tail" {
		t.Fatalf("%v %q %v", tab, rest, err)
	}
}
