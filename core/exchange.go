package core

import "sync"

// ExchangeDecl describes an exchange.declare.
type ExchangeDecl struct {
	Name                                   string
	Kind                                   string // direct, fanout, topic, headers
	Durable, AutoDelete, Internal, Passive bool
	// Arguments: alternate-exchange is Arguments["alternate-exchange"]
	// (string). Core keeps the table; the caller must not modify it afterwards.
	Arguments Table
}

// exchange is one exchange of a vhost. Its identity fields are immutable; its
// binding index is guarded by mu (match under RLock, add/remove under Lock,
// always with the vhost topology lock held for writing).
type exchange struct {
	name       string
	kind       string
	durable    bool
	autoDelete bool
	internal   bool
	args       Table
	alternate  string // alternate-exchange name, "" = none
	isDefault  bool   // the nameless exchange: routes by queue name, has no bindings

	mu      sync.RWMutex
	m       matcher // nil for the default exchange
	deleted bool    // guarded by mu; a router that raced with deletion skips it

	// inbound are the exchange-to-exchange bindings whose destination is this
	// exchange, so that deleting it can unlink them. Guarded by the vhost
	// topology lock.
	inbound map[*Binding]struct{}
}

func newExchange(d ExchangeDecl) *exchange {
	x := &exchange{
		name:       d.Name,
		kind:       d.Kind,
		durable:    d.Durable,
		autoDelete: d.AutoDelete,
		internal:   d.Internal,
		args:       d.Arguments,
		inbound:    make(map[*Binding]struct{}),
	}
	x.alternate, _ = d.Arguments["alternate-exchange"].(string)
	if d.Name == "" {
		x.isDefault = true
	} else {
		x.m = newMatcher(d.Kind)
	}
	return x
}

// validKind reports whether core implements an exchange type.
func validKind(kind string) bool {
	switch kind {
	case "direct", "fanout", "topic", "headers":
		return true
	}
	return false
}

// assertEquivalent is rabbit_exchange:assert_equivalence: a redeclaration
// must repeat type, durable, auto_delete, internal and alternate-exchange.
func (x *exchange) assertEquivalent(d ExchangeDecl, vhost string) error {
	fields := []struct {
		name          string
		have, request string
	}{
		{"type", x.kind, d.Kind},
		{"durable", boolText(x.durable), boolText(d.Durable)},
		{"auto_delete", boolText(x.autoDelete), boolText(d.AutoDelete)},
		{"internal", boolText(x.internal), boolText(d.Internal)},
	}
	for _, f := range fields {
		if f.have != f.request {
			return inequivalent(f.name, "exchange", x.name, vhost, "'"+f.request+"'", "'"+f.have+"'")
		}
	}
	return assertArgsEquivalence(x.args, d.Arguments, []string{"alternate-exchange"}, "exchange", x.name, vhost)
}

func boolText(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// matchInto adds the destinations of msg's bindings on x to r and reports
// whether any binding matched (RabbitMQ's test for using the alternate
// exchange).
func (x *exchange) matchInto(r *router, v *VHost) bool {
	if x.isDefault {
		q := v.Queue(r.msg.RoutingKey)
		if q == nil {
			return false
		}
		r.addQueue(q)
		return true
	}
	r.matched = false
	x.mu.RLock()
	if !x.deleted {
		x.m.match(r.msg.RoutingKey, r.msg.Properties.Headers, r.visit)
	}
	x.mu.RUnlock()
	return r.matched
}

// linearDedupMax is how many queues a router deduplicates by scanning before
// it switches to a map: scanning wins for the common fan-out of a few queues.
const linearDedupMax = 16

// router is the scratch state of one routing decision, pooled so that a
// publish allocates nothing. It is used by one goroutine at a time.
type router struct {
	msg     *Message
	xs      []*exchange // exchanges reached so far; also the work list
	queues  []*Queue    // distinct destination queues, in discovery order
	seen    map[*Queue]struct{}
	matched bool
	visit   func(*Binding) // r.add, bound once so passing it does not allocate
}

var routerPool = sync.Pool{New: func() any {
	r := &router{}
	r.visit = r.add
	return r
}}

func getRouter(msg *Message) *router {
	r := routerPool.Get().(*router)
	r.msg = msg
	return r
}

func putRouter(r *router) {
	clear(r.xs)
	clear(r.queues)
	r.xs, r.queues, r.msg = r.xs[:0], r.queues[:0], nil
	if r.seen != nil {
		if len(r.seen) > 4096 {
			r.seen = nil // a huge fan-out should not pin its map forever
		} else {
			clear(r.seen)
		}
	}
	routerPool.Put(r)
}

// add is the matcher's visit function. It runs under the source exchange's
// read lock and only records.
func (r *router) add(b *Binding) {
	r.matched = true
	switch t := b.Target.(type) {
	case *Queue:
		r.addQueue(t)
	case *exchange:
		r.addExchange(t)
	}
}

func (r *router) addExchange(x *exchange) {
	for _, y := range r.xs {
		if y == x {
			return
		}
	}
	r.xs = append(r.xs, x)
}

func (r *router) addQueue(q *Queue) {
	n := len(r.queues)
	if n < linearDedupMax {
		if containsQueue(r.queues, q) {
			return
		}
		r.queues = append(r.queues, q)
		return
	}
	if r.seen == nil {
		r.seen = make(map[*Queue]struct{}, 2*linearDedupMax)
	}
	if len(r.seen) == 0 {
		for _, x := range r.queues {
			r.seen[x] = struct{}{}
		}
	}
	if _, dup := r.seen[q]; dup {
		return
	}
	r.seen[q] = struct{}{}
	r.queues = append(r.queues, q)
}

// route fills r.queues with the destinations of r.msg published to x:
// exchange-to-exchange bindings followed transitively, each exchange visited
// once (so cycles end), and an exchange's alternate-exchange followed when
// none of its own bindings matched (rabbit_exchange:route).
func (v *VHost) route(r *router, x *exchange) {
	r.xs = append(r.xs, x)
	for i := 0; i < len(r.xs); i++ {
		x := r.xs[i]
		if !x.matchInto(r, v) && x.alternate != "" {
			if ae := v.exchange(x.alternate); ae != nil {
				r.addExchange(ae)
			}
		}
	}
}
