package core

import "testing"

func TestFanoutMatch(t *testing.T) {
	runMatcherCases(t, "fanout", []matcherCase{
		{
			name:     "every binding whatever the key",
			bindings: []*Binding{qbind("q1", "a", nil), qbind("q2", "b", nil), xbind("e", "", nil)},
			key:      "zzz",
			want:     []string{"q1", "q2", "x:e"},
		},
		{
			name:     "empty routing key",
			bindings: []*Binding{qbind("q1", "a", nil)},
			key:      "",
			want:     []string{"q1"},
		},
		{
			name:     "one queue bound with two keys: visited per binding",
			bindings: []*Binding{qbind("q1", "a", nil), qbind("q1", "b", nil)},
			key:      "a",
			want:     []string{"q1", "q1"},
		},
		{
			name: "no bindings",
			key:  "a",
		},
	})
}
