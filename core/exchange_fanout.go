package core

// fanoutMatcher matches every binding whatever the routing key. Bindings that
// differ only in routing key are still distinct bindings (RabbitMQ keeps both),
// so one queue bound twice is visited twice; the caller deduplicates.
type fanoutMatcher struct {
	index bindingIndex
	all   bindingList[*Binding]
}

func newFanoutMatcher() *fanoutMatcher {
	return &fanoutMatcher{index: newBindingIndex()}
}

func (m *fanoutMatcher) add(b *Binding) bool {
	s := m.index.insert(b)
	if s == nil {
		return false
	}
	m.all.push(b, s)
	return true
}

func (m *fanoutMatcher) remove(b *Binding) *Binding {
	s := m.index.delete(b)
	if s == nil {
		return nil
	}
	m.all.remove(s)
	return s.b
}

func (m *fanoutMatcher) match(_ string, _ Table, visit func(*Binding)) {
	for _, b := range m.all.items {
		visit(b)
	}
}

func (m *fanoutMatcher) each(fn func(*Binding)) { m.index.each(fn) }

func (m *fanoutMatcher) len() int { return m.index.n }
