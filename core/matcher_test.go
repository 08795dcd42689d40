package core

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"time"
)

var matcherKinds = []string{"direct", "fanout", "topic", "headers"}

// qbind is a binding to queue dest; xbind one to exchange dest.
func qbind(dest, key string, args Table) *Binding {
	return &Binding{Source: "src", Destination: dest, RoutingKey: key, Arguments: args}
}

func xbind(dest, key string, args Table) *Binding {
	return &Binding{Source: "src", Destination: dest, ToExchange: true, RoutingKey: key, Arguments: args}
}

// matchedDests runs one match and returns the destinations reached, sorted,
// one entry per visited binding ("x:" marks an exchange). It fails the test if
// a binding is visited twice, which the matcher contract forbids.
func matchedDests(t testing.TB, m matcher, key string, headers Table) []string {
	t.Helper()
	seen := make(map[*Binding]bool)
	var out []string
	m.match(key, headers, func(b *Binding) {
		if seen[b] {
			t.Errorf("match(%q): binding %s/%q visited twice", key, b.Destination, b.RoutingKey)
		}
		seen[b] = true
		if b.ToExchange {
			out = append(out, "x:"+b.Destination)
		} else {
			out = append(out, b.Destination)
		}
	})
	slices.Sort(out)
	return out
}

// matcherCase is one routing check shared by the per-kind tables.
type matcherCase struct {
	name     string
	bindings []*Binding
	key      string
	headers  Table
	want     []string // sorted destinations, one per matching binding
}

func runMatcherCases(t *testing.T, kind string, cases []matcherCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMatcher(kind)
			for _, b := range tc.bindings {
				if !m.add(b) {
					t.Fatalf("add(%s, %q) = false", b.Destination, b.RoutingKey)
				}
			}
			got := matchedDests(t, m, tc.key, tc.headers)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("match(%q, %v) = %q, want %q", tc.key, tc.headers, got, want)
			}
		})
	}
}

func TestMatcherBindingIdentity(t *testing.T) {
	for _, kind := range matcherKinds {
		t.Run(kind, func(t *testing.T) {
			m := newMatcher(kind)
			a := qbind("q1", "k", Table{"a": int32(1)})
			if !m.add(a) {
				t.Fatal("first add = false")
			}
			// Equal content under another pointer is the same binding.
			if m.add(qbind("q1", "k", Table{"a": int32(1)})) {
				t.Error("duplicate add = true")
			}
			// Each of these differs from a in exactly one identity field.
			distinct := []*Binding{
				qbind("q2", "k", Table{"a": int32(1)}),
				xbind("q1", "k", Table{"a": int32(1)}),
				qbind("q1", "k2", Table{"a": int32(1)}),
				qbind("q1", "k", Table{"a": int64(1)}),
				qbind("q1", "k", nil),
			}
			for _, b := range distinct {
				if !m.add(b) {
					t.Errorf("add(%+v) = false, want a distinct binding", *b)
				}
			}
			if got, want := m.len(), 1+len(distinct); got != want {
				t.Errorf("len = %d, want %d", got, want)
			}
			if got := m.remove(qbind("nope", "k", nil)); got != nil {
				t.Errorf("remove(absent) = %+v, want nil", got)
			}
			if got := m.remove(qbind("q1", "k", Table{"a": int32(2)})); got != nil {
				t.Errorf("remove(other args) = %+v, want nil", got)
			}
			if got := m.remove(qbind("q1", "k", Table{"a": int32(1)})); got != a {
				t.Errorf("remove returned %p, want the stored binding %p", got, a)
			}
			if got := m.remove(a); got != nil {
				t.Errorf("second remove = %+v, want nil", got)
			}
			if got, want := m.len(), len(distinct); got != want {
				t.Errorf("len after remove = %d, want %d", got, want)
			}
			// A removed binding can be added again.
			if !m.add(a) {
				t.Error("re-add after remove = false")
			}
		})
	}
}

func TestMatcherEachAndRemoveAll(t *testing.T) {
	for _, kind := range matcherKinds {
		t.Run(kind, func(t *testing.T) {
			m := newMatcher(kind)
			keys := []string{"a", "a.b", "#", "*.b", "", "a"}
			var added []*Binding
			for i, k := range keys {
				for _, dest := range []string{"q1", "q2"} {
					b := qbind(dest, k, Table{"i": int32(i)})
					m.add(b)
					added = append(added, b)
				}
			}
			m.add(xbind("q1", "a", nil))
			seen := make(map[*Binding]int)
			m.each(func(b *Binding) { seen[b]++ })
			if len(seen) != m.len() || m.len() != len(added)+1 {
				t.Fatalf("each saw %d bindings, len = %d, want %d", len(seen), m.len(), len(added)+1)
			}
			for _, b := range added {
				if seen[b] != 1 {
					t.Errorf("each visited %s/%q %d times", b.Destination, b.RoutingKey, seen[b])
				}
			}
			// Deleting a destination: remove from inside each.
			m.each(func(b *Binding) {
				if b.Destination == "q1" && !b.ToExchange {
					if m.remove(b) != b {
						t.Errorf("remove inside each failed for %q", b.RoutingKey)
					}
				}
			})
			m.each(func(b *Binding) {
				if b.Destination == "q1" && !b.ToExchange {
					t.Errorf("q1 binding %q survived", b.RoutingKey)
				}
			})
			if got, want := m.len(), len(added)/2+1; got != want {
				t.Errorf("len = %d, want %d", got, want)
			}
			m.each(func(b *Binding) { m.remove(b) })
			if m.len() != 0 {
				t.Errorf("len after removing all = %d", m.len())
			}
			if got := matchedDests(t, m, "a", Table{"i": int32(0)}); len(got) != 0 {
				t.Errorf("empty matcher matched %q", got)
			}
		})
	}
}

// TestMatcherBucketChurn drives many bindings through one bucket (the O(1)
// swap-removal path) and checks the survivors after every removal pattern.
func TestMatcherBucketChurn(t *testing.T) {
	for _, kind := range matcherKinds {
		t.Run(kind, func(t *testing.T) {
			m := newMatcher(kind)
			const n = 300
			for i := range n {
				m.add(qbind(churnQueueName(i), "k", nil))
			}
			// Remove every third binding, in an order that moves the last one
			// into many different holes.
			want := make(map[string]bool)
			for i := range n {
				want[churnQueueName(i)] = true
			}
			for i := n - 1; i >= 0; i -= 3 {
				if m.remove(qbind(churnQueueName(i), "k", nil)) == nil {
					t.Fatalf("remove %d failed", i)
				}
				delete(want, churnQueueName(i))
			}
			for i := 0; i < n; i += 7 {
				if want[churnQueueName(i)] {
					m.remove(qbind(churnQueueName(i), "k", nil))
					delete(want, churnQueueName(i))
				}
			}
			got := matchedDests(t, m, "k", nil)
			if len(got) != len(want) || m.len() != len(want) {
				t.Fatalf("matched %d, len %d, want %d", len(got), m.len(), len(want))
			}
			for _, d := range got {
				if !want[d] {
					t.Errorf("removed destination %s still matches", d)
				}
			}
		})
	}
}

func churnQueueName(i int) string { return fmt.Sprintf("q%03d", i) }

func TestNewMatcherUnknownKindPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("newMatcher(\"x-bogus\") did not panic")
		}
	}()
	newMatcher("x-bogus")
}

func TestBindingArgsEqual(t *testing.T) {
	ts := time.Unix(1700000000, 0)
	nan := math.NaN()
	cases := []struct {
		name string
		a, b Table
		want bool
	}{
		{"both nil", nil, nil, true},
		{"nil vs empty", nil, Table{}, true},
		{"nil vs one", nil, Table{"a": nil}, false},
		{"same scalars", Table{"a": int32(1), "b": "x", "c": true}, Table{"c": true, "b": "x", "a": int32(1)}, true},
		{"different value", Table{"a": int32(1)}, Table{"a": int32(2)}, false},
		{"different key", Table{"a": int32(1)}, Table{"b": int32(1)}, false},
		{"int widths differ", Table{"a": int32(1)}, Table{"a": int64(1)}, false},
		{"signedness differs", Table{"a": int8(1)}, Table{"a": uint8(1)}, false},
		{"float widths differ", Table{"a": float32(1)}, Table{"a": float64(1)}, false},
		{"string vs bytes", Table{"a": "x"}, Table{"a": []byte("x")}, false},
		{"bytes", Table{"a": []byte("x")}, Table{"a": []byte("x")}, true},
		{"void", Table{"a": nil}, Table{"a": nil}, true},
		{"void vs value", Table{"a": nil}, Table{"a": ""}, false},
		{"nan reflexive", Table{"a": nan}, Table{"a": nan}, true},
		{"decimal", Table{"a": Decimal{2, 150}}, Table{"a": Decimal{2, 150}}, true},
		{"decimal scale", Table{"a": Decimal{2, 150}}, Table{"a": Decimal{1, 15}}, false},
		{"timestamp", Table{"a": ts}, Table{"a": ts.UTC()}, true},
		{"timestamp differs", Table{"a": ts}, Table{"a": ts.Add(time.Second)}, false},
		{"nested table", Table{"t": Table{"x": int16(1)}}, Table{"t": Table{"x": int16(1)}}, true},
		{"nested table type", Table{"t": Table{"x": int16(1)}}, Table{"t": Table{"x": int32(1)}}, false},
		{"array", Table{"l": []any{"a", int32(1), nil}}, Table{"l": []any{"a", int32(1), nil}}, true},
		{"array order", Table{"l": []any{"a", "b"}}, Table{"l": []any{"b", "a"}}, false},
		{"array length", Table{"l": []any{"a"}}, Table{"l": []any{"a", "a"}}, false},
		{"array vs table", Table{"l": []any{}}, Table{"l": Table{}}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := bindingArgsEqual(tc.a, tc.b); got != tc.want {
				t.Errorf("bindingArgsEqual(%v, %v) = %v, want %v", tc.a, tc.b, got, tc.want)
			}
			if got := bindingArgsEqual(tc.b, tc.a); got != tc.want {
				t.Errorf("bindingArgsEqual(%v, %v) = %v, want %v (reversed)", tc.b, tc.a, got, tc.want)
			}
		})
	}
}
