package core

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestTopicMatch(t *testing.T) {
	// match reports the routing keys each pattern must and must not match.
	// The empty routing key is zero words (RabbitMQ's split_topic_key), so "*"
	// does not match it while "#" and "" do.
	patterns := []struct {
		pattern string
		match   []string
		nomatch []string
	}{
		{"#", []string{"", "a", "a.b", "a..b", ".", "#", "*"}, nil},
		{"*", []string{"a", "*", "#"}, []string{"", "a.b", "."}},
		{"", []string{""}, []string{"a", ".", "*"}},
		{"a", []string{"a"}, []string{"", "b", "a.b", "a.", ".a", "A"}},
		{"a.*", []string{"a.b", "a.", "a.*"}, []string{"a", "a.b.c", "b.a", ""}},
		{"*.b", []string{"a.b", ".b"}, []string{"b", "a.b.c", "a.a.b"}},
		{"a.#", []string{"a", "a.b", "a.b.c", "a.", "a.."}, []string{"", "b", "ab", "b.a"}},
		{"#.b", []string{"b", "a.b", "a.c.b", ".b"}, []string{"", "a", "b.a", "a.bb"}},
		{"a.#.b", []string{"a.b", "a.x.b", "a.x.y.b", "a..b", "a.b.b"}, []string{"a", "b", "a.x", "a.b.c", "x.a.b"}},
		{"a.*.b", []string{"a.x.b", "a..b"}, []string{"a.b", "a.x.y.b"}},
		{"#.#", []string{"", "a", "a.b.c"}, nil},
		{"#.a.#", []string{"a", "a.a", "x.a", "a.x", "x.a.y", "a.a.a"}, []string{"", "b", "x.y"}},
		{"a.#.#", []string{"a", "a.b", "a.b.c"}, []string{"", "b"}},
		{"#.*", []string{"a", "a.b", "."}, []string{""}},
		{"*.#", []string{"a", "a.b", "."}, []string{""}},
		{"*.*", []string{"a.b", ".", "a."}, []string{"", "a", "a.b.c"}},
		{"#.*.#", []string{"a", "a.b.c"}, []string{""}},
		{"a..b", []string{"a..b"}, []string{"a.b", "a.x.b"}},
		{".", []string{"."}, []string{"", "a", "a.b"}},
		{"a.", []string{"a."}, []string{"a", "a.b"}},
		{"sensors.*.dev1.#", []string{"sensors.s1.dev1", "sensors.s1.dev1.temp.c"}, []string{"sensors.dev1", "sensors.s1.dev2.temp"}},
		{"a#.b*", []string{"a#.b*"}, []string{"a.b", "a#.bx"}}, // wildcards only as whole words
	}
	for _, p := range patterns {
		for _, key := range p.match {
			t.Run(fmt.Sprintf("%q~%q", p.pattern, key), func(t *testing.T) {
				m := newMatcher("topic")
				m.add(qbind("q", p.pattern, nil))
				if got := matchedDests(t, m, key, nil); len(got) != 1 {
					t.Errorf("pattern %q did not match key %q", p.pattern, key)
				}
			})
		}
		for _, key := range p.nomatch {
			t.Run(fmt.Sprintf("%q!~%q", p.pattern, key), func(t *testing.T) {
				m := newMatcher("topic")
				m.add(qbind("q", p.pattern, nil))
				if got := matchedDests(t, m, key, nil); len(got) != 0 {
					t.Errorf("pattern %q matched key %q", p.pattern, key)
				}
			})
		}
	}
}

func TestTopicMatchMany(t *testing.T) {
	all := []*Binding{
		qbind("q1", "a.b", nil), qbind("q2", "a.b", nil), // same key, both receive
		qbind("q3", "a.*", nil), qbind("q4", "#", nil), qbind("q5", "a.#.b", nil),
		qbind("q6", "#.#", nil), qbind("q7", "#.a.#", nil), qbind("q8", "*.*.*", nil),
		xbind("e1", "a.#", nil),
		qbind("q9", "#", nil), qbind("q9", "a.#", nil), // one queue, two matching bindings
	}
	runMatcherCases(t, "topic", []matcherCase{
		{"a.b", all, "a.b", nil, []string{"q1", "q2", "q3", "q4", "q5", "q6", "q7", "q9", "q9", "x:e1"}},
		{"a.x.y.b", all, "a.x.y.b", nil, []string{"q4", "q5", "q6", "q7", "q9", "q9", "x:e1"}},
		{"x.y.z", all, "x.y.z", nil, []string{"q4", "q6", "q8", "q9"}},
		{"empty key", all, "", nil, []string{"q4", "q6", "q9"}},
		{"a.a.a", all, "a.a.a", nil, []string{"q4", "q6", "q7", "q8", "q9", "q9", "x:e1"}},
	})
}

func TestTopicPatternWords(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{".", []string{"", ""}},
		{"a..b", []string{"a", "", "b"}},
		{"#.#", []string{"#"}},
		{"#.*", []string{"*", "#"}},
		{"*.#.*.#.a.#", []string{"*", "*", "#", "a", "#"}},
		{"a.#.#.b.*.*", []string{"a", "#", "b", "*", "*"}},
	}
	for _, tc := range cases {
		if got := topicPatternWords(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("topicPatternWords(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestTopicPrune checks that removing bindings leaves no empty nodes behind,
// whatever the order, so memory does not grow with churn.
func TestTopicPrune(t *testing.T) {
	keys := []string{"a.b.c", "a.b", "a.*.c", "a.#", "#", "#.c", "a.#.c.#", "*", "", "a..", "x.y.z.w"}
	m := newTopicMatcher()
	for i := range 3 {
		for _, k := range keys {
			m.add(qbind(fmt.Sprint("q", i), k, nil))
		}
	}
	order := rand.New(rand.NewPCG(3, 4)).Perm(3 * len(keys))
	for _, j := range order {
		if m.remove(qbind(fmt.Sprint("q", j/len(keys)), keys[j%len(keys)], nil)) == nil {
			t.Fatalf("remove %d failed", j)
		}
	}
	if !m.root.empty() || m.root.words != nil {
		t.Errorf("trie not pruned: root %+v", m.root)
	}
	if m.len() != 0 || len(m.index.ids) != 0 {
		t.Errorf("len %d, ids %d", m.len(), len(m.index.ids))
	}
}

// TestTopicDedupOverflow matches more multi-'#' nodes in one call than the
// fixed seen array holds, so the map fallback is exercised.
func TestTopicDedupOverflow(t *testing.T) {
	m := newMatcher("topic")
	var want []string
	for i := range 40 {
		q := fmt.Sprint("q", i)
		m.add(qbind(q, fmt.Sprintf("#.w%d.#", i), nil))
		want = append(want, q)
	}
	var words []string
	for i := range 40 {
		words = append(words, fmt.Sprint("w", i), fmt.Sprint("w", i))
	}
	got := matchedDests(t, m, strings.Join(words, "."), nil)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("got %d destinations, want %d", len(got), len(want))
	}
}

// refSplit splits as RabbitMQ's split_topic_key: "" is zero words.
func refSplit(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ".")
}

// refTopicMatch is the obvious recursive definition, with no trie and no
// normalization, to check the trie against.
func refTopicMatch(pattern, key []string) bool {
	if len(pattern) == 0 {
		return len(key) == 0
	}
	switch pattern[0] {
	case "#":
		for i := 0; i <= len(key); i++ {
			if refTopicMatch(pattern[1:], key[i:]) {
				return true
			}
		}
		return false
	case "*":
		return len(key) > 0 && refTopicMatch(pattern[1:], key[1:])
	}
	return len(key) > 0 && key[0] == pattern[0] && refTopicMatch(pattern[1:], key[1:])
}

func randomTopicKey(r *rand.Rand, alphabet []string, maxWords int) string {
	n := r.IntN(maxWords + 1)
	words := make([]string, n)
	for i := range words {
		words[i] = alphabet[r.IntN(len(alphabet))]
	}
	return strings.Join(words, ".")
}

// TestTopicMatchesReference compares the trie with refTopicMatch on random
// patterns and keys (fixed seed), before and after removing bindings. Small
// alphabets make collisions, empty words and '#' backtracking frequent.
func TestTopicMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	keyWords := []string{"a", "b", "c", ""}
	patWords := []string{"a", "b", "c", "", "*", "#", "#", "*"}
	m := newMatcher("topic")
	var live []*Binding
	for i := range 2000 {
		b := qbind(fmt.Sprint("q", i%300), randomTopicKey(r, patWords, 6), nil)
		if m.add(b) {
			live = append(live, b)
		}
	}
	check := func(phase string) {
		t.Helper()
		for range 3000 {
			key := randomTopicKey(r, keyWords, 7)
			kw := refSplit(key)
			want := make(map[*Binding]bool)
			for _, b := range live {
				if refTopicMatch(refSplit(b.RoutingKey), kw) {
					want[b] = true
				}
			}
			got := make(map[*Binding]int)
			m.match(key, nil, func(b *Binding) { got[b]++ })
			for b, n := range got {
				if n > 1 {
					t.Errorf("%s: key %q visited pattern %q %d times", phase, key, b.RoutingKey, n)
				}
				if !want[b] {
					t.Errorf("%s: key %q wrongly matched pattern %q", phase, key, b.RoutingKey)
				}
			}
			for b := range want {
				if got[b] == 0 {
					t.Errorf("%s: key %q missed pattern %q", phase, key, b.RoutingKey)
				}
			}
			if t.Failed() {
				t.FailNow()
			}
		}
	}
	check("full")
	r.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	for _, b := range live[len(live)/2:] {
		if m.remove(qbind(b.Destination, b.RoutingKey, nil)) != b {
			t.Fatalf("remove %s/%q failed", b.Destination, b.RoutingKey)
		}
	}
	live = live[:len(live)/2]
	check("half removed")
	for _, b := range live {
		m.remove(b)
	}
	if tm := m.(*topicMatcher); !tm.root.empty() || m.len() != 0 {
		t.Errorf("trie not empty after removing everything")
	}
}
