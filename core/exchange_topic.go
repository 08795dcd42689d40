package core

import "strings"

// topicMatcher is a word trie over binding keys, in the style of the nats
// sublist: one node per distinct pattern prefix, with the literal words in a
// map and the '*' and '#' children in their own fields. Matching walks only
// the branches the routing key can take, so its cost depends on the key's word
// count and the matching patterns, not on the number of bindings.
//
// Words are split on '.' the way RabbitMQ's split_topic_key does: "a..b" is
// three words (the middle one empty), "a." is two, and the empty key is zero
// words. So the binding key "" matches only the routing key "", "#" matches
// every key including "", and "*" does not match "".
type topicMatcher struct {
	index bindingIndex
	root  topicNode
}

type topicNode struct {
	words    map[string]*topicNode // literal next words; nil when there are none
	star     *topicNode
	hash     *topicNode
	bindings bindingList[*Binding] // bindings whose (normalized) pattern ends here
	// dedup is set when the pattern path holds two or more '#': only then can
	// one routing key reach the node through more than one alignment, so only
	// then does match pay for the at-most-once check.
	dedup bool
}

func (n *topicNode) empty() bool {
	return n.bindings.len() == 0 && len(n.words) == 0 && n.star == nil && n.hash == nil
}

func newTopicMatcher() *topicMatcher {
	return &topicMatcher{index: newBindingIndex()}
}

// topicPatternWords splits a binding key into trie words and normalizes each
// run of wildcards to its '*'s followed by at most one '#'. The rewrite keeps
// the set of matched keys ("#.#" = "#", "#.*" = "*.#": both are "k stars and
// then anything") but bounds backtracking and means a '#' node never has a '#'
// or '*' child, which match relies on. The binding keeps its original key.
func topicPatternWords(key string) []string {
	if key == "" {
		return nil
	}
	words := strings.Split(key, ".")
	out := words[:0] // rewriting in place is safe: a run never grows
	for i := 0; i < len(words); {
		if w := words[i]; w != "*" && w != "#" {
			out = append(out, w)
			i++
			continue
		}
		stars, hash := 0, false
		for ; i < len(words) && (words[i] == "*" || words[i] == "#"); i++ {
			if words[i] == "*" {
				stars++
			} else {
				hash = true
			}
		}
		for range stars {
			out = append(out, "*")
		}
		if hash {
			out = append(out, "#")
		}
	}
	return out
}

func (m *topicMatcher) add(b *Binding) bool {
	s := m.index.insert(b)
	if s == nil {
		return false
	}
	n, hashes := &m.root, 0
	for _, w := range topicPatternWords(b.RoutingKey) {
		var next **topicNode
		switch w {
		case "*":
			next = &n.star
		case "#":
			hashes++
			next = &n.hash
		default:
			if n.words == nil {
				n.words = make(map[string]*topicNode)
			}
			c := n.words[w]
			if c == nil {
				c = &topicNode{dedup: hashes >= 2}
				n.words[w] = c
			}
			n = c
			continue
		}
		if *next == nil {
			*next = &topicNode{dedup: hashes >= 2}
		}
		n = *next
	}
	n.bindings.push(b, s)
	return true
}

func (m *topicMatcher) remove(b *Binding) *Binding {
	s := m.index.delete(b)
	if s == nil {
		return nil
	}
	words := topicPatternWords(b.RoutingKey)
	// path[i] is the parent of the node reached by words[i].
	path := make([]*topicNode, len(words))
	n := &m.root
	for i, w := range words {
		path[i] = n
		switch w {
		case "*":
			n = n.star
		case "#":
			n = n.hash
		default:
			n = n.words[w]
		}
	}
	n.bindings.remove(s)
	// Prune nodes left with nothing, bottom up, so churn does not leave a trail
	// of empty nodes behind.
	for i := len(words) - 1; i >= 0 && n.empty(); i-- {
		parent := path[i]
		switch w := words[i]; w {
		case "*":
			parent.star = nil
		case "#":
			parent.hash = nil
		default:
			delete(parent.words, w)
			if len(parent.words) == 0 {
				parent.words = nil
			}
		}
		n = parent
	}
	return s.b
}

func (m *topicMatcher) match(routingKey string, _ Table, visit func(*Binding)) {
	st := topicMatch{visit: visit}
	st.walk(&m.root, routingKey, routingKey != "")
}

func (m *topicMatcher) each(fn func(*Binding)) { m.index.each(fn) }

func (m *topicMatcher) len() int { return m.index.n }

// topicMatch is the state of one match call. It lives on the caller's stack:
// the fixed seen array covers the usual number of multi-'#' nodes without a
// heap allocation, and the map is made only past that.
type topicMatch struct {
	visit func(*Binding)
	seen  [16]*topicNode
	nseen int
	more  map[*topicNode]struct{}
}

// walk visits the bindings below n whose remaining pattern matches the
// remaining routing key: the words of rest if hasWords, else no words at all
// (rest == "" alone cannot tell zero words from one empty word).
func (st *topicMatch) walk(n *topicNode, rest string, hasWords bool) {
	if !hasWords {
		st.emit(n)
		if n.hash != nil { // a trailing '#' also matches zero words
			st.emit(n.hash)
		}
		return
	}
	word, tail, tailHasWords := rest, "", false
	if i := strings.IndexByte(rest, '.'); i >= 0 {
		word, tail, tailHasWords = rest[:i], rest[i+1:], true
	}
	if n.words != nil {
		if c := n.words[word]; c != nil {
			st.walk(c, tail, tailHasWords)
		}
	}
	if n.star != nil {
		st.walk(n.star, tail, tailHasWords)
	}
	h := n.hash
	if h == nil {
		return
	}
	if len(h.words) == 0 {
		// Nothing follows this '#' (normalization rules out '*' and '#'
		// children), so it absorbs the whole rest: emit once, no backtracking.
		st.emit(h)
		return
	}
	// '#' absorbs zero, one, ... all remaining words; try the rest of the
	// pattern after each.
	st.walk(h, rest, true)
	for r := rest; ; {
		i := strings.IndexByte(r, '.')
		if i < 0 {
			st.walk(h, "", false)
			return
		}
		r = r[i+1:]
		st.walk(h, r, true)
	}
}

// emit visits n's bindings, unless n is a multi-'#' node already emitted in
// this call.
func (st *topicMatch) emit(n *topicNode) {
	if n.bindings.len() == 0 || (n.dedup && !st.first(n)) {
		return
	}
	for _, b := range n.bindings.items {
		st.visit(b)
	}
}

// first records n and reports whether this is its first emission.
func (st *topicMatch) first(n *topicNode) bool {
	for _, s := range st.seen[:st.nseen] {
		if s == n {
			return false
		}
	}
	if _, ok := st.more[n]; ok {
		return false
	}
	if st.nseen < len(st.seen) {
		st.seen[st.nseen] = n
		st.nseen++
		return true
	}
	if st.more == nil {
		st.more = make(map[*topicNode]struct{})
	}
	st.more[n] = struct{}{}
	return true
}
