package core

import "testing"

func TestDirectMatch(t *testing.T) {
	runMatcherCases(t, "direct", []matcherCase{
		{
			name:     "two queues bound by the same key both receive",
			bindings: []*Binding{qbind("q1", "k", nil), qbind("q2", "k", nil), qbind("q3", "other", nil)},
			key:      "k",
			want:     []string{"q1", "q2"},
		},
		{
			name:     "no binding for key",
			bindings: []*Binding{qbind("q1", "k", nil)},
			key:      "K",
		},
		{
			name:     "one queue bound twice with different args is visited per binding",
			bindings: []*Binding{qbind("q1", "k", nil), qbind("q1", "k", Table{"a": "b"})},
			key:      "k",
			want:     []string{"q1", "q1"},
		},
		{
			name:     "queue and exchange of the same name",
			bindings: []*Binding{qbind("d", "k", nil), xbind("d", "k", nil)},
			key:      "k",
			want:     []string{"d", "x:d"},
		},
		{
			name:     "empty key is an ordinary key",
			bindings: []*Binding{qbind("q1", "", nil), qbind("q2", "k", nil)},
			key:      "",
			want:     []string{"q1"},
		},
		{
			name:     "no wildcards in direct",
			bindings: []*Binding{qbind("q1", "#", nil), qbind("q2", "*", nil)},
			key:      "a",
		},
		{
			name:     "wildcard characters are literal",
			bindings: []*Binding{qbind("q1", "#", nil)},
			key:      "#",
			want:     []string{"q1"},
		},
		{
			name:     "headers are ignored",
			bindings: []*Binding{qbind("q1", "k", Table{"x-match": "all", "a": "b"})},
			key:      "k",
			headers:  Table{"a": "other"},
			want:     []string{"q1"},
		},
	})
}

func TestDirectRemoveDropsEmptyBucket(t *testing.T) {
	m := newDirectMatcher()
	m.add(qbind("q1", "k", nil))
	m.add(qbind("q2", "k", nil))
	m.remove(qbind("q1", "k", nil))
	if got := matchedDests(t, m, "k", nil); len(got) != 1 || got[0] != "q2" {
		t.Fatalf("after removing q1: %q", got)
	}
	m.remove(qbind("q2", "k", nil))
	if len(m.buckets) != 0 || len(m.index.ids) != 0 {
		t.Errorf("buckets %d, ids %d after removing all, want 0", len(m.buckets), len(m.index.ids))
	}
}
