package core

import (
	"bytes"
	"math"
	"reflect"
	"time"
)

// Binding is one edge from a source exchange to a queue or exchange.
// Bindings are immutable once added to a matcher.
type Binding struct {
	Source      string // source exchange name
	Destination string // queue or exchange name
	ToExchange  bool   // Destination names an exchange (exchange.bind), not a queue
	RoutingKey  string
	Arguments   Table
	// Target is the resolved destination (*Queue or *Exchange), set by the vhost
	// before the binding is added; matchers never look at it.
	Target any
}

// matcher is the binding index of one exchange. It is not safe for concurrent use;
// the exchange guards it with its RWMutex (match under RLock).
type matcher interface {
	// add inserts b; it reports false if an equal binding (same destination, kind,
	// key and arguments) is already present, in which case nothing changes.
	add(b *Binding) bool
	// remove deletes the binding equal to b and returns the stored one, or nil.
	remove(b *Binding) *Binding
	// match calls visit for every binding whose key/arguments match. A binding is
	// visited at most once per call, but the same destination may be reached by two
	// bindings: deduplication per destination is the caller's job.
	match(routingKey string, headers Table, visit func(*Binding))
	// each calls fn for every binding (for listing and deletion of a destination).
	each(fn func(*Binding))
	// len is the number of bindings.
	len() int
}

// newMatcher returns the index for an exchange kind: "direct", "fanout", "topic" or
// "headers". The caller has already validated the kind.
//
// In every matcher, visit (match) must not modify the matcher, and fn (each) may
// remove the binding it is given but must not otherwise modify the matcher.
func newMatcher(kind string) matcher {
	switch kind {
	case "direct":
		return newDirectMatcher()
	case "fanout":
		return newFanoutMatcher()
	case "topic":
		return newTopicMatcher()
	case "headers":
		return newHeadersMatcher()
	}
	// Reaching here is a bug in the caller, which must validate the kind first;
	// returning nil would only move the crash to the first publish.
	panic("core: newMatcher: unknown exchange kind " + kind)
}

// bindingArgsEqual reports whether two argument tables are equal as RabbitMQ
// compares binding arguments: same keys, and for each key a value of the same
// AMQP type and value, recursively. It is deliberately type-strict (int32 5 and
// int64 5 differ), because RabbitMQ keeps the type tag in the stored binding
// and compares whole terms. A nil table equals an empty one: both are "no
// arguments" on the wire. Key order is not significant (Table is a map).
func bindingArgsEqual(a, b Table) bool {
	if len(a) != len(b) {
		return false
	}
	for k, av := range a {
		bv, ok := b[k]
		if !ok || !fieldValueEqual(av, bv) {
			return false
		}
	}
	return true
}

// fieldValueEqual is the type-strict equality of two table values (see
// bindingArgsEqual). Floats compare by bit pattern so that equality is
// reflexive even for NaN; otherwise a binding with a NaN argument could be
// added twice and never removed.
func fieldValueEqual(a, b any) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	case int8:
		y, ok := b.(int8)
		return ok && x == y
	case uint8:
		y, ok := b.(uint8)
		return ok && x == y
	case int16:
		y, ok := b.(int16)
		return ok && x == y
	case uint16:
		y, ok := b.(uint16)
		return ok && x == y
	case int32:
		y, ok := b.(int32)
		return ok && x == y
	case uint32:
		y, ok := b.(uint32)
		return ok && x == y
	case int64:
		y, ok := b.(int64)
		return ok && x == y
	case float32:
		y, ok := b.(float32)
		return ok && math.Float32bits(x) == math.Float32bits(y)
	case float64:
		y, ok := b.(float64)
		return ok && math.Float64bits(x) == math.Float64bits(y)
	case Decimal:
		y, ok := b.(Decimal)
		return ok && x == y
	case string:
		y, ok := b.(string)
		return ok && x == y
	case []byte:
		y, ok := b.([]byte)
		return ok && bytes.Equal(x, y)
	case time.Time:
		y, ok := b.(time.Time)
		return ok && x.Equal(y)
	case Table:
		y, ok := b.(Table)
		return ok && bindingArgsEqual(x, y)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !fieldValueEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	}
	// Not a type the codec produces; fall back to the general comparison rather
	// than panicking on an uncomparable dynamic type with ==.
	return reflect.DeepEqual(a, b)
}

// bindingID is what identifies a binding within one exchange apart from its
// arguments. Bindings that differ only in arguments share an ID and are chained.
type bindingID struct {
	dest       string
	key        string
	toExchange bool
}

// bindingSlot is the index's record of one stored binding. pos is its position
// in the bindingList that the matcher keeps it in, so removal is O(1) however
// many bindings share a bucket (10k queues on one key, or all of them on "#").
type bindingSlot struct {
	b    *Binding
	pos  int
	next *bindingSlot // another binding with the same bindingID, other arguments
}

// bindingIndex finds stored bindings by identity, so add and remove cost O(1)
// map work plus an arguments comparison, independent of bucket sizes.
type bindingIndex struct {
	ids map[bindingID]*bindingSlot
	n   int
}

func newBindingIndex() bindingIndex {
	return bindingIndex{ids: make(map[bindingID]*bindingSlot)}
}

func idOf(b *Binding) bindingID {
	return bindingID{dest: b.Destination, key: b.RoutingKey, toExchange: b.ToExchange}
}

// insert records b and returns its new slot, or nil if an equal binding is
// already present.
func (x *bindingIndex) insert(b *Binding) *bindingSlot {
	id := idOf(b)
	head := x.ids[id]
	for s := head; s != nil; s = s.next {
		if bindingArgsEqual(s.b.Arguments, b.Arguments) {
			return nil
		}
	}
	s := &bindingSlot{b: b, next: head}
	x.ids[id] = s
	x.n++
	return s
}

// delete unlinks the slot of the binding equal to b and returns it, or nil.
func (x *bindingIndex) delete(b *Binding) *bindingSlot {
	id := idOf(b)
	var prev *bindingSlot
	for s := x.ids[id]; s != nil; prev, s = s, s.next {
		if !bindingArgsEqual(s.b.Arguments, b.Arguments) {
			continue
		}
		switch {
		case prev != nil:
			prev.next = s.next
		case s.next != nil:
			x.ids[id] = s.next
		default:
			delete(x.ids, id)
		}
		x.n--
		return s
	}
	return nil
}

// each calls fn for every stored binding. The next link is read before fn runs
// so that fn may remove the binding it is given.
func (x *bindingIndex) each(fn func(*Binding)) {
	for _, s := range x.ids {
		for s != nil {
			next := s.next
			fn(s.b)
			s = next
		}
	}
}

// bindingList is an unordered bucket of bindings with O(1) append and removal
// (swap with the last). Delivery order between queues carries no meaning in
// AMQP, so giving up order is free. items is what match iterates: a dense
// slice, no pointer chasing through slots.
type bindingList[T any] struct {
	items []T
	slots []*bindingSlot
}

func (l *bindingList[T]) push(item T, s *bindingSlot) {
	s.pos = len(l.items)
	l.items = append(l.items, item)
	l.slots = append(l.slots, s)
}

// remove deletes the item recorded by s.
func (l *bindingList[T]) remove(s *bindingSlot) {
	i, last := s.pos, len(l.items)-1
	l.items[i] = l.items[last]
	l.slots[i] = l.slots[last]
	l.slots[i].pos = i
	var zero T
	l.items[last] = zero // drop references so removed bindings can be collected
	l.slots[last] = nil
	l.items = l.items[:last]
	l.slots = l.slots[:last]
	// Give memory back after a burst: without this, a bucket that once held
	// 100k bindings keeps that capacity for the life of the exchange.
	if c := cap(l.items); c > 64 && last < c/4 {
		l.items = append(make([]T, 0, 2*last), l.items...)
		l.slots = append(make([]*bindingSlot, 0, 2*last), l.slots...)
	}
}

func (l *bindingList[T]) len() int { return len(l.items) }
