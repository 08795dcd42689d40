package core

// directMatcher indexes bindings by exact routing key. Every binding under the
// key matches, not just the first: two queues bound with the same key each get
// a copy, as in RabbitMQ.
type directMatcher struct {
	index   bindingIndex
	buckets map[string]*bindingList[*Binding]
}

func newDirectMatcher() *directMatcher {
	return &directMatcher{
		index:   newBindingIndex(),
		buckets: make(map[string]*bindingList[*Binding]),
	}
}

func (m *directMatcher) add(b *Binding) bool {
	s := m.index.insert(b)
	if s == nil {
		return false
	}
	l := m.buckets[b.RoutingKey]
	if l == nil {
		l = new(bindingList[*Binding])
		m.buckets[b.RoutingKey] = l
	}
	l.push(b, s)
	return true
}

func (m *directMatcher) remove(b *Binding) *Binding {
	s := m.index.delete(b)
	if s == nil {
		return nil
	}
	l := m.buckets[b.RoutingKey]
	l.remove(s)
	if l.len() == 0 {
		delete(m.buckets, b.RoutingKey)
	}
	return s.b
}

func (m *directMatcher) match(routingKey string, _ Table, visit func(*Binding)) {
	if l := m.buckets[routingKey]; l != nil {
		for _, b := range l.items {
			visit(b)
		}
	}
}

func (m *directMatcher) each(fn func(*Binding)) { m.index.each(fn) }

func (m *directMatcher) len() int { return m.index.n }
