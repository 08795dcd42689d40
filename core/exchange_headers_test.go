package core

import (
	"testing"
	"time"
)

func TestHeadersMatchOne(t *testing.T) {
	ts := time.Unix(1700000000, 0)
	cases := []struct {
		name    string
		args    Table
		headers Table
		want    bool
	}{
		// x-match all (explicit and default).
		{"all: every arg matches", Table{"x-match": "all", "a": "1", "b": int32(2)}, Table{"a": "1", "b": int32(2), "c": "extra"}, true},
		{"all is the default", Table{"a": "1", "b": "2"}, Table{"a": "1", "b": "2"}, true},
		{"all: one value differs", Table{"a": "1", "b": "2"}, Table{"a": "1", "b": "3"}, false},
		{"all: one header missing", Table{"a": "1", "b": "2"}, Table{"a": "1"}, false},
		{"all: nil headers", Table{"a": "1"}, nil, false},
		{"all: no args matches everything", Table{"x-match": "all"}, Table{"a": "1"}, true},
		{"all: no args, nil headers", nil, nil, true},
		{"unknown x-match falls back to all", Table{"x-match": "bogus", "a": "1"}, Table{"a": "1"}, true},
		{"non-string x-match falls back to all", Table{"x-match": int32(1), "a": "1", "b": "2"}, Table{"a": "1"}, false},

		// x-match any.
		{"any: one of two matches", Table{"x-match": "any", "a": "1", "b": "2"}, Table{"a": "0", "b": "2"}, true},
		{"any: none match", Table{"x-match": "any", "a": "1", "b": "2"}, Table{"a": "0", "c": "2"}, false},
		{"any: no args matches nothing", Table{"x-match": "any"}, Table{"a": "1"}, false},
		{"any: nil headers", Table{"x-match": "any", "a": "1"}, nil, false},

		// x- arguments: skipped by all/any, compared by -with-x.
		{"all ignores x- args", Table{"x-match": "all", "x-foo": "1", "a": "1"}, Table{"a": "1"}, true},
		{"any ignores x- args", Table{"x-match": "any", "x-foo": "1"}, Table{"x-foo": "1"}, false},
		{"all ignores x- headers", Table{"a": "1"}, Table{"a": "1", "x-foo": "2"}, true},
		{"all-with-x needs x- arg", Table{"x-match": "all-with-x", "x-foo": "1", "a": "1"}, Table{"a": "1"}, false},
		{"all-with-x matches x- arg", Table{"x-match": "all-with-x", "x-foo": "1", "a": "1"}, Table{"a": "1", "x-foo": "1"}, true},
		{"all-with-x x- value differs", Table{"x-match": "all-with-x", "x-foo": "1"}, Table{"x-foo": "2"}, false},
		{"any-with-x on x- arg", Table{"x-match": "any-with-x", "x-foo": "1", "a": "1"}, Table{"x-foo": "1"}, true},
		{"any-with-x none", Table{"x-match": "any-with-x", "x-foo": "1", "a": "1"}, Table{"x-foo": "2", "a": "2"}, false},
		{"x-match itself is never compared", Table{"x-match": "all-with-x"}, Table{"b": "1"}, true},
		{"any-with-x with only x-match", Table{"x-match": "any-with-x"}, Table{"x-match": "any-with-x"}, false},

		// Void arguments test presence only.
		{"void: present with a value", Table{"a": nil}, Table{"a": "anything"}, true},
		{"void: present and void", Table{"a": nil}, Table{"a": nil}, true},
		{"void: missing", Table{"a": nil}, Table{"b": "1"}, false},
		{"void: nil headers", Table{"a": nil}, nil, false},
		{"void header vs value arg", Table{"a": "1"}, Table{"a": nil}, false},
		{"any: void arg present", Table{"x-match": "any", "a": nil, "b": "1"}, Table{"a": int64(7)}, true},
		{"all-with-x: void x- arg", Table{"x-match": "all-with-x", "x-a": nil}, Table{"x-a": "1"}, true},

		// Value equality (headerValueEqual).
		{"int widths are one integer type", Table{"n": int32(5)}, Table{"n": int64(5)}, true},
		{"signedness does not matter", Table{"n": uint8(5)}, Table{"n": int16(5)}, true},
		{"uint32 vs int64", Table{"n": uint32(4000000000)}, Table{"n": int64(4000000000)}, true},
		{"int value differs", Table{"n": int32(5)}, Table{"n": int32(6)}, false},
		{"int never equals float", Table{"n": int32(5)}, Table{"n": float64(5)}, false},
		{"float never equals int", Table{"n": float64(5)}, Table{"n": int64(5)}, false},
		{"float widths", Table{"f": float32(1.5)}, Table{"f": float64(1.5)}, true},
		{"float32 widened exactly", Table{"f": float32(0.1)}, Table{"f": float64(0.1)}, false},
		{"string vs bytes", Table{"s": "abc"}, Table{"s": []byte("abc")}, true},
		{"bytes vs string", Table{"s": []byte("abc")}, Table{"s": "abc"}, true},
		{"string vs int", Table{"s": "5"}, Table{"s": int32(5)}, false},
		{"bytes vs int", Table{"s": []byte("5")}, Table{"s": int32(5)}, false},
		{"float vs string", Table{"f": 1.5}, Table{"f": "1.5"}, false},
		{"negative across widths", Table{"n": int8(-1)}, Table{"n": int64(-1)}, true},
		{"sign is kept", Table{"n": int16(-1)}, Table{"n": uint16(65535)}, false},
		{"bool", Table{"b": true}, Table{"b": true}, true},
		{"bool vs int", Table{"b": true}, Table{"b": int8(1)}, false},
		{"decimal", Table{"d": Decimal{2, 150}}, Table{"d": Decimal{2, 150}}, true},
		{"decimal scale", Table{"d": Decimal{2, 150}}, Table{"d": Decimal{1, 15}}, false},
		{"timestamp", Table{"t": ts}, Table{"t": ts}, true},
		{"timestamp vs int", Table{"t": ts}, Table{"t": ts.Unix()}, false},
		{"nested table", Table{"t": Table{"x": "1"}}, Table{"t": Table{"x": "1"}}, true},
		{"nested table is type-strict", Table{"t": Table{"x": int32(1)}}, Table{"t": Table{"x": int64(1)}}, false},
		{"array", Table{"l": []any{"a", int16(1)}}, Table{"l": []any{"a", int16(1)}}, true},
		{"array order", Table{"l": []any{"a", "b"}}, Table{"l": []any{"b", "a"}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMatcher("headers")
			m.add(qbind("q", "", tc.args))
			got := len(matchedDests(t, m, "ignored", tc.headers)) == 1
			if got != tc.want {
				t.Errorf("args %v, headers %v: match = %v, want %v", tc.args, tc.headers, got, tc.want)
			}
		})
	}
}

func TestHeadersMatchMany(t *testing.T) {
	all := []*Binding{
		qbind("q1", "", Table{"x-match": "all", "type": "report", "format": "pdf"}),
		qbind("q2", "", Table{"x-match": "all", "type": "report", "format": "pdf"}), // same args, other queue
		qbind("q3", "", Table{"x-match": "any", "type": "report", "format": "zip"}),
		qbind("q4", "other-key", Table{"format": nil}),
		xbind("e1", "", Table{"x-match": "any", "format": "pdf"}),
		qbind("q5", "", Table{"x-match": "any"}),
		qbind("q6", "", nil),
	}
	runMatcherCases(t, "headers", []matcherCase{
		{"pdf report", all, "", Table{"type": "report", "format": "pdf"}, []string{"q1", "q2", "q3", "q4", "q6", "x:e1"}},
		{"zip log", all, "", Table{"type": "log", "format": "zip"}, []string{"q3", "q4", "q6"}},
		{"no headers", all, "", nil, []string{"q6"}},
		{"routing key is ignored", all, "other-key", Table{"type": "log"}, []string{"q6"}},
	})
}

func TestValidHeadersMatch(t *testing.T) {
	cases := []struct {
		args Table
		want string // "" for valid
	}{
		{nil, ""},
		{Table{"a": "1"}, ""},
		{Table{"x-match": "all"}, ""},
		{Table{"x-match": "any"}, ""},
		{Table{"x-match": "all-with-x"}, ""},
		{Table{"x-match": "any-with-x"}, ""},
		{Table{"x-match": "ALL"}, `Invalid x-match field value <<"ALL">>; expected all, any, all-with-x, or any-with-x`},
		{Table{"x-match": ""}, `Invalid x-match field value <<"">>; expected all, any, all-with-x, or any-with-x`},
		{Table{"x-match": `a"b`}, `Invalid x-match field value <<"a\"b">>; expected all, any, all-with-x, or any-with-x`},
		{Table{"x-match": "héllo"}, `Invalid x-match field value <<"héllo"/utf8>>; expected all, any, all-with-x, or any-with-x`},
		{Table{"x-match": "\x00\x01"}, `Invalid x-match field value <<0,1>>; expected all, any, all-with-x, or any-with-x`},
		{Table{"x-match": int32(1)}, `Invalid x-match field type signedint (value 1); expected longstr`},
		{Table{"x-match": []byte("all")}, `Invalid x-match field type binary (value <<"all">>); expected longstr`},
		{Table{"x-match": nil}, `Invalid x-match field type void (value undefined); expected longstr`},
		{Table{"x-match": true}, `Invalid x-match field type bool (value true); expected longstr`},
	}
	for _, tc := range cases {
		err := validHeadersMatch(tc.args)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("validHeadersMatch(%v) = %v, want nil", tc.args, err)
		case tc.want != "" && (err == nil || err.Error() != tc.want):
			t.Errorf("validHeadersMatch(%v) = %v, want %s", tc.args, err, tc.want)
		}
	}
}

// TestHeadersRemoveByValue checks that removal finds a binding by equal
// arguments (another Table, other map order) and leaves its siblings in place.
func TestHeadersRemoveByValue(t *testing.T) {
	m := newMatcher("headers")
	stored := qbind("q", "", Table{"x-match": "any", "a": int32(1), "b": nil})
	m.add(stored)
	m.add(qbind("q", "", Table{"x-match": "any", "a": int32(2)}))
	if got := m.remove(qbind("q", "", Table{"b": nil, "a": int32(1), "x-match": "any"})); got != stored {
		t.Fatalf("remove by equal args returned %v", got)
	}
	if got := matchedDests(t, m, "", Table{"a": int32(1)}); len(got) != 0 {
		t.Errorf("removed binding still matches: %q", got)
	}
	if got := matchedDests(t, m, "", Table{"a": int64(2)}); len(got) != 1 {
		t.Errorf("remaining binding does not match: %q", got)
	}
}
