package core

import (
	"errors"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// VHost is a virtual host: a namespace of exchanges, queues and bindings.
// It is safe for concurrent use.
//
// Locking: mu is the topology lock. Declarations, deletions and binding
// changes hold it for writing; lookups on the publish path hold it for
// reading only for the map access. Lock order is mu -> exchange.mu ->
// Queue.mu -> (a DeliverySink's own lock, inside Deliver). Nothing holds a
// queue lock while publishing: dead letters are republished after unlocking.
type VHost struct {
	name   string
	clock  Clock
	log    *slog.Logger
	store  Store      // nil: nothing is persisted
	mem    *memBudget // the broker's
	broker *Broker

	mu sync.RWMutex
	// stats follows mu on purpose: see vhostCounters.
	stats     vhostCounters
	exchanges map[string]*exchange // guarded by mu
	queues    map[string]*Queue    // guarded by mu
	// topoPos is the store position of the latest topology change; a
	// declaration waits for it, after unlocking, before it is answered.
	topoPos uint64 // guarded by mu

	deleted   atomic.Bool // Broker.DeleteVHost: no more topology changes
	maxConns  atomic.Int64
	maxQueues atomic.Int64
	conns     int // open connections; guarded by broker.connMu
}

// preDeclared are the exchanges every vhost starts with, as in RabbitMQ.
var preDeclared = []ExchangeDecl{
	{Name: "", Kind: "direct", Durable: true},
	{Name: "amq.direct", Kind: "direct", Durable: true},
	{Name: "amq.fanout", Kind: "fanout", Durable: true},
	{Name: "amq.topic", Kind: "topic", Durable: true},
	{Name: "amq.headers", Kind: "headers", Durable: true},
	{Name: "amq.match", Kind: "headers", Durable: true},
}

func newVHost(b *Broker, name string) *VHost {
	v := &VHost{
		name:      name,
		clock:     b.clock,
		log:       b.log,
		store:     b.store,
		mem:       &b.mem,
		broker:    b,
		exchanges: make(map[string]*exchange),
		queues:    make(map[string]*Queue),
	}
	for _, d := range preDeclared {
		v.exchanges[d.Name] = newExchange(d)
	}
	return v
}

// Name returns the vhost's name.
func (v *VHost) Name() string { return v.name }

// close stops every queue timer; see Broker.Close.
func (v *VHost) close() {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, q := range v.queues {
		q.mu.Lock()
		q.closed = true
		q.stopTimersLocked()
		q.mu.Unlock()
	}
}

// deleteAll removes every queue and every exchange but the pre-declared
// ones (Broker.DeleteVHost), then stops the vhost's timers.
func (v *VHost) deleteAll() error {
	v.mu.RLock()
	queues := make([]*Queue, 0, len(v.queues))
	for _, q := range v.queues {
		queues = append(queues, q)
	}
	v.mu.RUnlock()
	var errs []error
	for _, q := range queues {
		if _, err := v.deleteQueue(q, nil); err != nil {
			errs = append(errs, err)
		}
	}
	v.mu.Lock()
	for _, x := range v.exchanges {
		if x.name != "" && !strings.HasPrefix(x.name, reservedPrefix) && v.exchanges[x.name] == x {
			v.deleteExchangeLocked(x)
		}
	}
	pos := v.topoPos
	v.mu.Unlock()
	if err := v.wait(pos); err != nil {
		errs = append(errs, err)
	}
	v.close()
	return errors.Join(errs...)
}

// exchange returns the named exchange or nil.
func (v *VHost) exchange(name string) *exchange {
	v.mu.RLock()
	x := v.exchanges[name]
	v.mu.RUnlock()
	return x
}

// HasExchange reports whether the named exchange exists.
func (v *VHost) HasExchange(name string) bool { return v.exchange(name) != nil }

// Queue returns the named queue, or nil if absent. The caller checks
// exclusivity (CheckAccess) before consuming or getting from it.
func (v *VHost) Queue(name string) *Queue {
	v.mu.RLock()
	q := v.queues[name]
	v.mu.RUnlock()
	return q
}

func (v *VHost) noExchange(name string) error {
	return Errorf(CodeNotFound, "no exchange '%s' in vhost '%s'", name, v.name)
}

func (v *VHost) noQueue(name string) error {
	return Errorf(CodeNotFound, "no queue '%s' in vhost '%s'", name, v.name)
}

// errDefaultExchange is RabbitMQ's refusal of any operation naming the
// default exchange (declare, delete, bind, unbind).
func errDefaultExchange() error {
	return Errorf(CodeAccessRefused, "operation not permitted on the default exchange")
}

// DeclareExchange is exchange.declare. Passive: 404 if absent. Otherwise:
// unknown kind -> 503; new "amq."-prefixed name -> 403; a redeclaration
// must be equivalent (kind, durable, auto-delete, internal,
// alternate-exchange) -> else 406. The default exchange cannot be declared
// (403).
func (v *VHost) DeclareExchange(d ExchangeDecl) error {
	if d.Passive {
		if d.Name == "" {
			return errDefaultExchange()
		}
		if v.exchange(d.Name) == nil {
			return v.noExchange(d.Name)
		}
		return nil
	}
	if !validKind(d.Kind) {
		return Errorf(CodeCommandInvalid, "unknown exchange type '%s'", d.Kind)
	}
	if d.Name == "" {
		return errDefaultExchange()
	}
	return v.topology(func() error {
		if x := v.exchanges[d.Name]; x != nil {
			return x.assertEquivalent(d, v.name)
		}
		if err := checkName("exchange", d.Name); err != nil {
			return err
		}
		if ae, ok := d.Arguments["alternate-exchange"]; ok {
			if _, isStr := ae.(string); !isStr {
				return Errorf(CodePreconditionFailed, "invalid type '%s' for arg 'alternate-exchange' in %s",
					amqpTypeName(ae), rs("exchange", d.Name, v.name))
			}
		}
		v.exchanges[d.Name] = newExchange(d)
		if d.Durable && v.store != nil {
			v.topoPos = v.store.PutExchange(v.name, d)
		}
		return nil
	})
}

// topology runs fn, a topology change, under the topology lock, then waits
// for whatever it recorded in the store to be durable: a declare-ok must
// mean the entity survives a crash. The wait happens after unlocking so
// that publishers are not held up by the fsync.
func (v *VHost) topology(fn func() error) error {
	v.mu.Lock()
	if v.deleted.Load() {
		v.mu.Unlock()
		return Errorf(CodeConnectionForced, "vhost '%s' is deleted", v.name)
	}
	before := v.topoPos
	err := fn()
	pos := v.topoPos
	v.mu.Unlock()
	if pos == before || v.store == nil {
		return err
	}
	if serr := v.store.Wait(pos); serr != nil && err == nil {
		return storeError(serr)
	}
	return err
}

// DeleteExchange is exchange.delete: it removes the exchange and every
// binding where it is source or destination. Deleting an absent exchange
// succeeds, as in RabbitMQ (rabbit_channel ignores not_found). Errors: ""
// and amq.* -> 403; ifUnused and the exchange has bindings as a source ->
// 406.
func (v *VHost) DeleteExchange(name string, ifUnused bool) error {
	if name == "" {
		return errDefaultExchange()
	}
	if strings.HasPrefix(name, reservedPrefix) {
		return Errorf(CodeAccessRefused, "deletion of system %s not allowed", rs("exchange", name, v.name))
	}
	return v.topology(func() error {
		x := v.exchanges[name]
		if x == nil {
			return nil
		}
		if ifUnused && x.m.len() > 0 {
			return Errorf(CodePreconditionFailed, "%s in use", rs("exchange", name, v.name))
		}
		v.deleteExchangeLocked(x)
		return nil
	})
}

// deleteExchangeLocked removes x and its bindings in both directions;
// auto-delete sources left without bindings go too. mu is held.
func (v *VHost) deleteExchangeLocked(x *exchange) {
	delete(v.exchanges, x.name)
	if x.durable && v.store != nil {
		v.topoPos = v.store.DeleteExchange(v.name, x.name)
	}
	x.mu.Lock()
	x.deleted = true
	var out []*Binding
	x.m.each(func(b *Binding) { out = append(out, b) })
	x.mu.Unlock()
	for _, b := range out {
		v.forgetBindingLocked(x, b)
		switch t := b.Target.(type) {
		case *Queue:
			delete(t.bindings, b)
		case *exchange:
			delete(t.inbound, b)
		}
	}
	for b := range x.inbound {
		v.removeBindingLocked(b)
	}
}

// removeBindingLocked removes b from its source (if that still exists) and
// deletes the source if it is auto-delete and b was its last binding. The
// caller unlinks b from its destination. mu is held.
func (v *VHost) removeBindingLocked(b *Binding) {
	src := v.exchanges[b.Source]
	if src == nil {
		return
	}
	src.mu.Lock()
	src.m.remove(b)
	empty := src.m.len() == 0
	src.mu.Unlock()
	v.forgetBindingLocked(src, b)
	if empty && src.autoDelete {
		v.deleteExchangeLocked(src)
	}
}

// durableBinding reports whether b is stored: RabbitMQ keeps a binding
// across restarts when its source and destination are both durable.
func (v *VHost) durableBinding(src *exchange, b *Binding) bool {
	if v.store == nil || !src.durable {
		return false
	}
	switch t := b.Target.(type) {
	case *Queue:
		return t.persist
	case *exchange:
		return t.durable
	}
	return false
}

func bindingRecord(b *Binding) BindingRecord {
	return BindingRecord{Source: b.Source, Destination: b.Destination, ToExchange: b.ToExchange, RoutingKey: b.RoutingKey, Arguments: b.Arguments}
}

// rememberBindingLocked and forgetBindingLocked keep the store's copy of a
// durable binding from src; mu is held.
func (v *VHost) rememberBindingLocked(src *exchange, b *Binding) {
	if v.durableBinding(src, b) {
		v.topoPos = v.store.PutBinding(v.name, bindingRecord(b))
	}
}

func (v *VHost) forgetBindingLocked(src *exchange, b *Binding) {
	if v.durableBinding(src, b) {
		v.topoPos = v.store.DeleteBinding(v.name, bindingRecord(b))
	}
}

// lookupSourceLocked resolves a binding's source exchange, refusing the
// default exchange as source or destination (403) and absent ones (404).
func (v *VHost) lookupSourceLocked(source string) (*exchange, error) {
	if source == "" {
		return nil, errDefaultExchange()
	}
	x := v.exchanges[source]
	if x == nil {
		return nil, v.noExchange(source)
	}
	return x, nil
}

// validateBinding applies the exchange kind's argument checks (x-match for
// headers exchanges) with RabbitMQ's 406.
func validateBinding(x *exchange, args Table) error {
	if x.kind != "headers" {
		return nil
	}
	if err := validHeadersMatch(args); err != nil {
		return &Error{Code: CodePreconditionFailed, Text: err.Error()}
	}
	return nil
}

// BindQueue is queue.bind. Errors: the default exchange -> 403; absent
// exchange or queue -> 404 (exchange checked first); queue exclusive to
// another owner -> 405; invalid headers x-match -> 406. Binding twice is a
// no-op. Core keeps args; the caller must not modify them afterwards.
func (v *VHost) BindQueue(queue, exchange, key string, args Table, owner uint64) error {
	return v.topology(func() error { return v.bindQueueLocked(queue, exchange, key, args, owner) })
}

// queueBindingLocked resolves the exchange and queue of queue.bind and
// queue.unbind, with their errors in RabbitMQ's order: the exchange
// (403, 404), then the queue (404), then exclusivity (405). mu is held.
func (v *VHost) queueBindingLocked(queue, source string, owner uint64) (*exchange, *Queue, error) {
	x, err := v.lookupSourceLocked(source)
	if err != nil {
		return nil, nil, err
	}
	q := v.queues[queue]
	if q == nil {
		return nil, nil, v.noQueue(queue)
	}
	if err := q.CheckAccess(owner); err != nil {
		return nil, nil, err
	}
	return x, q, nil
}

func (v *VHost) bindQueueLocked(queue, exchange, key string, args Table, owner uint64) error {
	x, q, err := v.queueBindingLocked(queue, exchange, owner)
	if err != nil {
		return err
	}
	if err := validateBinding(x, args); err != nil {
		return err
	}
	b := &Binding{Source: x.name, Destination: q.name, RoutingKey: key, Arguments: args, Target: q}
	x.mu.Lock()
	added := x.m.add(b)
	x.mu.Unlock()
	if added {
		q.bindings[b] = struct{}{}
		v.rememberBindingLocked(x, b)
	}
	return nil
}

// UnbindQueue is queue.unbind. Removing a binding that does not exist is
// not an error; the errors are BindQueue's. An auto-delete exchange losing
// its last binding is deleted.
func (v *VHost) UnbindQueue(queue, exchange, key string, args Table, owner uint64) error {
	return v.topology(func() error { return v.unbindQueueLocked(queue, exchange, key, args, owner) })
}

func (v *VHost) unbindQueueLocked(queue, exchange, key string, args Table, owner uint64) error {
	x, q, err := v.queueBindingLocked(queue, exchange, owner)
	if err != nil {
		return err
	}
	x.mu.Lock()
	b := x.m.remove(&Binding{Source: x.name, Destination: q.name, RoutingKey: key, Arguments: args})
	empty := x.m.len() == 0
	x.mu.Unlock()
	if b != nil {
		delete(q.bindings, b)
		v.forgetBindingLocked(x, b)
		if empty && x.autoDelete {
			v.deleteExchangeLocked(x)
		}
	}
	return nil
}

// ReplaceQueueBindings removes the bindings in remove (as UnbindQueue
// would) and binds queue to exchange with key and args, as one change to
// the topology: a message published meanwhile is routed by the old
// bindings or by the new one, never by neither. The MQTT listener
// replaces a subscription this way, which clients repeat on every
// reconnect; unbinding first lost what was published in between.
func (v *VHost) ReplaceQueueBindings(remove []Binding, queue, exchange, key string, args Table) error {
	return v.topology(func() error {
		x, q, err := v.queueBindingLocked(queue, exchange, 0)
		if err != nil {
			return err
		}
		if err := validateBinding(x, args); err != nil {
			return err
		}
		// Routing reads the exchange's index under x.mu alone, so the
		// old bindings leave it and the new one enters it in one hold.
		type removed struct {
			b *Binding
			q *Queue
		}
		var gone []removed
		nb := &Binding{Source: x.name, Destination: q.name, RoutingKey: key, Arguments: args, Target: q}
		x.mu.Lock()
		for _, r := range remove {
			rq := v.queues[r.Destination]
			if r.Source != x.name || rq == nil {
				continue
			}
			if b := x.m.remove(&Binding{Source: x.name, Destination: rq.name, RoutingKey: r.RoutingKey, Arguments: r.Arguments}); b != nil {
				gone = append(gone, removed{b, rq})
			}
		}
		added := x.m.add(nb)
		x.mu.Unlock()
		for _, g := range gone {
			delete(g.q.bindings, g.b)
			v.forgetBindingLocked(x, g.b)
		}
		if added {
			q.bindings[nb] = struct{}{}
			v.rememberBindingLocked(x, nb)
		}
		return nil
	})
}

// BindExchange is exchange.bind: messages reaching source are also routed
// through destination. Errors: the default exchange on either side -> 403;
// absent source, then destination -> 404; invalid headers x-match -> 406.
func (v *VHost) BindExchange(destination, source, key string, args Table) error {
	return v.topology(func() error { return v.bindExchangeLocked(destination, source, key, args) })
}

// exchangeBindingLocked resolves the exchanges of exchange.bind and
// exchange.unbind, with their errors in RabbitMQ's order: the default
// exchange on either side (403), then the source, then the destination
// (404). mu is held.
func (v *VHost) exchangeBindingLocked(destination, source string) (src, dst *exchange, err error) {
	if destination == "" {
		return nil, nil, errDefaultExchange()
	}
	if src, err = v.lookupSourceLocked(source); err != nil {
		return nil, nil, err
	}
	if dst = v.exchanges[destination]; dst == nil {
		return nil, nil, v.noExchange(destination)
	}
	return src, dst, nil
}

func (v *VHost) bindExchangeLocked(destination, source, key string, args Table) error {
	src, dst, err := v.exchangeBindingLocked(destination, source)
	if err != nil {
		return err
	}
	if err := validateBinding(src, args); err != nil {
		return err
	}
	b := &Binding{Source: src.name, Destination: dst.name, ToExchange: true, RoutingKey: key, Arguments: args, Target: dst}
	src.mu.Lock()
	added := src.m.add(b)
	src.mu.Unlock()
	if added {
		dst.inbound[b] = struct{}{}
		v.rememberBindingLocked(src, b)
	}
	return nil
}

// UnbindExchange is exchange.unbind; see UnbindQueue.
func (v *VHost) UnbindExchange(destination, source, key string, args Table) error {
	return v.topology(func() error { return v.unbindExchangeLocked(destination, source, key, args) })
}

func (v *VHost) unbindExchangeLocked(destination, source, key string, args Table) error {
	src, dst, err := v.exchangeBindingLocked(destination, source)
	if err != nil {
		return err
	}
	src.mu.Lock()
	b := src.m.remove(&Binding{Source: src.name, Destination: dst.name, ToExchange: true, RoutingKey: key, Arguments: args})
	empty := src.m.len() == 0
	src.mu.Unlock()
	if b != nil {
		delete(dst.inbound, b)
		v.forgetBindingLocked(src, b)
		if empty && src.autoDelete {
			v.deleteExchangeLocked(src)
		}
	}
	return nil
}

// DeclareQueue is queue.declare. Passive: 404 if absent, 405 if exclusive
// to another owner. Otherwise: "" gets a server-generated name; a client
// name starting "amq." -> 403; an existing queue must be declared by its
// exclusive owner with the same exclusive flag (405), and equivalent
// durable, auto-delete and x-arguments (406); a new queue's arguments are
// validated (406). Declaring restarts the x-expires interval. Every queue is
// reachable through the default exchange by its name.
func (v *VHost) DeclareQueue(d QueueDecl) (QueueInfo, error) {
	if d.Passive {
		q := v.Queue(d.Name)
		if q == nil {
			return QueueInfo{}, v.noQueue(d.Name)
		}
		if err := q.CheckAccess(d.Owner); err != nil {
			return QueueInfo{}, err
		}
		return q.stat(), nil
	}
	name := d.Name
	if name != "" && !d.ServerNamed {
		if err := checkName("queue", name); err != nil {
			return QueueInfo{}, err
		}
	}
	var info QueueInfo
	err := v.topology(func() error {
		if name == "" {
			for name = ServerQueueName(); v.queues[name] != nil; name = ServerQueueName() {
			}
		}
		if q := v.queues[name]; q != nil {
			if err := q.assertEquivalent(d); err != nil {
				return err
			}
			info = q.stat()
			return nil
		}
		cfg, err := parseQueueArgs(name, v.name, d.Arguments)
		if err != nil {
			return err
		}
		if limit := v.maxQueues.Load(); limit > 0 && int64(len(v.queues)) >= limit {
			return errLimit(CodePreconditionFailed, "cannot declare queue '%s': queue limit in vhost '%s' (%d) is reached", name, v.name, limit)
		}
		q := newQueue(v, d, name, cfg)
		q.mu.Lock()
		q.touchLocked()
		q.armExpiresLocked(cfg.expires)
		q.mu.Unlock()
		v.queues[name] = q
		if q.persist {
			v.topoPos = v.store.PutQueue(QueueRecord{VHost: v.name, Name: name, AutoDelete: d.AutoDelete, Arguments: d.Arguments, LastUsed: q.lastUsed})
		}
		info = QueueInfo{Name: name}
		return nil
	})
	return info, err
}

// assertEquivalent is rabbit_amqqueue:assert_equivalence for a
// redeclaration.
func (q *Queue) assertEquivalent(d QueueDecl) error {
	var owner uint64
	if d.Exclusive {
		owner = d.Owner
	}
	if q.owner != owner || q.exclusive != d.Exclusive {
		return q.lockedError()
	}
	vh := q.vhost.name
	if q.durable != d.Durable {
		return inequivalent("durable", "queue", q.name, vh, "'"+boolText(d.Durable)+"'", "'"+boolText(q.durable)+"'")
	}
	if q.autoDelete != d.AutoDelete {
		return inequivalent("auto_delete", "queue", q.name, vh, "'"+boolText(d.AutoDelete)+"'", "'"+boolText(q.autoDelete)+"'")
	}
	return assertArgsEquivalence(q.args, d.Arguments, equivalenceKeys, "queue", q.name, vh)
}

// SetQueueExpires changes a queue's x-expires (0: never), as a RabbitMQ
// policy can after declaration, and records it for a durable queue. The
// interval still counts from the queue's last use. It is for owners whose
// idea of a queue's lifetime changes after declaring it: an MQTT 5 session
// expiry set again at DISCONNECT or at the next CONNECT.
func (v *VHost) SetQueueExpires(name string, d time.Duration) error {
	if d < 0 || d > maxExpiry*time.Millisecond {
		return Errorf(CodePreconditionFailed, "invalid x-expires %v for %s", d, rs("queue", name, v.name))
	}
	return v.topology(func() error {
		q := v.queues[name]
		if q == nil {
			return v.noQueue(name)
		}
		q.mu.Lock()
		if q.cfg.expires == d {
			q.mu.Unlock()
			return nil
		}
		args := maps.Clone(q.args)
		if d == 0 {
			delete(args, "x-expires")
		} else {
			if args == nil {
				args = Table{}
			}
			args["x-expires"] = int64(d / time.Millisecond)
		}
		q.args, q.cfg.expires = args, d
		if q.expiresTimer != nil {
			q.expiresTimer.Stop()
			q.expiresTimer = nil
		}
		if idle := q.unusedForLocked(q.now()); idle >= 0 {
			q.armExpiresLocked(max(d-idle, 0))
		}
		rec := QueueRecord{VHost: v.name, Name: name, AutoDelete: q.autoDelete, Arguments: args, LastUsed: q.lastUsed}
		q.mu.Unlock()
		if q.persist {
			v.topoPos = v.store.PutQueue(rec)
		}
		return nil
	})
}

// stat returns the queue's declare-ok figures and counts as a use for
// x-expires.
func (q *Queue) stat() QueueInfo {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.touchLocked()
	return QueueInfo{Name: q.name, Messages: uint32(q.ready), Consumers: uint32(len(q.consumers))}
}

// DeleteQueue is queue.delete. It returns the number of ready messages
// dropped. Deleting an absent queue succeeds with 0, as in RabbitMQ.
// Errors: exclusive to another owner -> 405; ifUnused and the queue has
// consumers, or ifEmpty and it has ready messages -> 406. Consumers of the
// deleted queue get DeliverySink.Cancelled; settling its outstanding
// deliveries is a no-op. Its bindings go, and auto-delete exchanges left
// without bindings with them.
func (v *VHost) DeleteQueue(name string, ifUnused, ifEmpty bool, owner uint64) (purged uint32, err error) {
	q := v.Queue(name)
	if q == nil {
		return 0, nil
	}
	if err := q.CheckAccess(owner); err != nil {
		return 0, err
	}
	return v.deleteQueue(q, func() error {
		if ifUnused && len(q.consumers) > 0 {
			return Errorf(CodePreconditionFailed, "%s in use", rs("queue", q.name, v.name))
		}
		if ifEmpty && q.ready > 0 {
			return Errorf(CodePreconditionFailed, "%s not empty", rs("queue", q.name, v.name))
		}
		return nil
	})
}

// deleteQueue deletes q if it is still in the vhost and check (run with
// q.mu held; nil = always) allows it.
func (v *VHost) deleteQueue(q *Queue, check func() error) (uint32, error) {
	var fx effects
	v.mu.Lock()
	if v.queues[q.name] != q {
		v.mu.Unlock()
		return 0, nil
	}
	q.mu.Lock()
	if check != nil {
		if err := check(); err != nil {
			q.mu.Unlock()
			v.mu.Unlock()
			return 0, err
		}
	}
	purged, consumers := q.markDeletedLocked(&fx)
	v.buryLocked(q)
	q.mu.Unlock()
	delete(v.queues, q.name)
	for b := range q.bindings {
		v.removeBindingLocked(b)
	}
	clear(q.bindings)
	if q.persist {
		v.topoPos = v.store.DeleteQueue(v.name, q.name)
	}
	pos := v.topoPos
	v.mu.Unlock()
	for _, c := range consumers {
		c.sink.Cancelled(c)
	}
	fx.run(v)
	if q.persist {
		if err := v.store.Wait(pos); err != nil {
			return purged, storeError(err)
		}
	}
	return purged, nil
}

// PurgeQueue is queue.purge: it drops the ready messages (not the unacked
// ones) and returns how many. Errors: 404, 405.
func (v *VHost) PurgeQueue(name string, owner uint64) (uint32, error) {
	q := v.Queue(name)
	if q == nil {
		return 0, v.noQueue(name)
	}
	if err := q.CheckAccess(owner); err != nil {
		return 0, err
	}
	var fx effects
	q.mu.Lock()
	n := q.purgeLocked(&fx)
	q.mu.Unlock()
	return n, v.wait(fx.pos)
}

// wait blocks until a store position from a message operation is durable.
func (v *VHost) wait(pos uint64) error {
	if pos == 0 || v.store == nil {
		return nil
	}
	if err := v.store.Wait(pos); err != nil {
		return storeError(err)
	}
	return nil
}

// ReleaseOwner deletes the exclusive queues of a connection that closed.
func (v *VHost) ReleaseOwner(owner uint64) {
	if owner == 0 {
		return
	}
	var mine []*Queue
	v.mu.RLock()
	for _, q := range v.queues {
		if q.exclusive && q.owner == owner {
			mine = append(mine, q)
		}
	}
	v.mu.RUnlock()
	for _, q := range mine {
		_, _ = v.deleteQueue(q, nil)
	}
}

// PublishResult is the outcome of Publish.
type PublishResult struct {
	Routed   int  // number of queues that accepted the message
	Rejected bool // some queue refused it (x-overflow reject-publish / reject-publish-dlx) -> publisher nack
	// Pos is the store position at which the message is durable in every
	// durable queue it reached, and whatever a PublishHook stored for it
	// (an MQTT retained message) is durable too (Broker.NotifySynced); 0
	// when nothing was stored. A publisher confirm must wait for it.
	Pos uint64
}

// Publish routes msg (msg.Exchange, msg.RoutingKey) once: exchange-to-
// exchange bindings followed transitively, alternate-exchange used when
// nothing matched, each destination queue enqueued at most once. It sets
// msg.ID and msg.Published if zero; after that msg belongs to core and is
// shared, unmodified, by every queue. Consumers may receive it on the
// caller's goroutine before Publish returns. Errors: 404 "no exchange 'x' in
// vhost '/'"; 403 "cannot publish to internal exchange 'x' in vhost '/'";
// 406 "invalid expiration '...': ..." for a bad expiration property.
func (v *VHost) Publish(msg *Message) (PublishResult, error) {
	x := v.exchange(msg.Exchange)
	if x == nil {
		return PublishResult{}, v.noExchange(msg.Exchange)
	}
	if x.internal {
		return PublishResult{}, Errorf(CodeAccessRefused, "cannot publish to internal %s", rs("exchange", x.name, v.name))
	}
	ttl, err := v.accept(msg)
	if err != nil {
		return PublishResult{}, err
	}
	v.stats.published.Add(1)
	var hookPos uint64
	if hs := v.broker.hooks.Load(); hs != nil {
		for _, h := range *hs {
			keep, pos := h(v.name, msg)
			hookPos = max(hookPos, pos)
			if !keep {
				return PublishResult{Pos: hookPos}, nil
			}
		}
	}
	res := v.publish(x, msg, ttl, "")
	res.Pos = max(res.Pos, hookPos)
	if res.Routed == 0 && !res.Rejected {
		v.stats.unroutable.Add(1)
	}
	return res, nil
}

// PublishInternal routes a message the broker publishes itself (MQTT's
// $SYS topics) as Publish does, also to an internal exchange, but without
// the publish hooks and without counting it as a client publish
// (VHostCounters.Published, Unroutable). Errors: 404 for a missing
// exchange, 406 for a bad expiration.
func (v *VHost) PublishInternal(msg *Message) (PublishResult, error) {
	x := v.exchange(msg.Exchange)
	if x == nil {
		return PublishResult{}, v.noExchange(msg.Exchange)
	}
	ttl, err := v.accept(msg)
	if err != nil {
		return PublishResult{}, err
	}
	return v.publish(x, msg, ttl, ""), nil
}

// accept validates msg's expiration, returning the per-message TTL
// (negative = none), and stamps its ID and publish time if unset.
func (v *VHost) accept(msg *Message) (time.Duration, error) {
	ttl := time.Duration(-1)
	if msg.Properties.Flags&FlagExpiration != 0 || msg.Properties.Expiration != "" {
		ms, err := parseExpiration(msg.Properties.Expiration)
		if err != nil {
			return 0, err
		}
		ttl = time.Duration(ms) * time.Millisecond
	}
	v.Stamp(msg)
	return ttl, nil
}

// Stamp sets msg's ID and publish time if unset, as Publish does. A caller
// that shares msg before publishing it (the MQTT listener stores a
// retained message first) stamps it first: Publish then leaves it as is,
// so that nobody writes msg while the others read it.
func (v *VHost) Stamp(msg *Message) {
	if msg.ID == 0 {
		msg.ID = NextMessageID()
	}
	if msg.Published.IsZero() {
		msg.Published = v.clock.Now()
	}
}

// parseExpiration is rabbit_basic:parse_expiration with the channel's 406:
// a decimal integer (optional sign, as Erlang's string:to_integer), in
// range for check_expiry.
func parseExpiration(s string) (int64, error) {
	invalid := func(term string) error {
		return Errorf(CodePreconditionFailed, "invalid expiration '%s': %s", s, term)
	}
	i := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	j := i
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	if j == i {
		return 0, invalid("no_integer")
	}
	if j < len(s) {
		return 0, invalid("{leftover_string," + strconv.Quote(s[j:]) + "}")
	}
	n, err := strconv.ParseInt(s[:j], 10, 64)
	if err != nil {
		return 0, invalid("{value_too_big," + strings.TrimPrefix(s[:j], "+") + "}")
	}
	if term := checkExpiry(n); term != "" {
		return 0, invalid(term)
	}
	return n, nil
}

// publish routes msg from x and enqueues it. msgTTL is the per-message TTL
// (negative = none). deathReason is set for a dead-lettered message: unless
// it is "rejected", queues the message would cycle back to are skipped.
func (v *VHost) publish(x *exchange, msg *Message, msgTTL time.Duration, deathReason string) PublishResult {
	r := getRouter(msg)
	defer putRouter(r)
	v.route(r, x)
	var deaths []any
	if deathReason != "" && deathReason != reasonRejected {
		deaths, _ = msg.Properties.Headers["x-death"].([]any)
	}
	var res PublishResult
	cycles := 0
	for _, q := range r.queues {
		if deaths != nil && isCycle(q.name, deaths) {
			v.log.Debug("dead-letter cycle: message dropped", "vhost", v.name, "queue", q.name)
			v.countDrop(DropDeadLetterCycle, false)
			cycles++
			continue
		}
		accepted, rejected, pos := q.enqueue(msg, msgTTL)
		if accepted {
			res.Routed++
		}
		res.Pos = max(res.Pos, pos)
		res.Rejected = res.Rejected || rejected
	}
	if deathReason != "" && res.Routed == 0 && !res.Rejected && cycles == 0 {
		v.countDrop(DropDeadLetterUnroutable, false)
	}
	return res
}

// QueueBindings returns copies of the bindings whose destination is the
// named queue (nil if it does not exist). The MQTT listener keeps a
// subscription's options in its binding's arguments and rebuilds sessions
// from them.
func (v *VHost) QueueBindings(queue string) []Binding {
	v.mu.RLock()
	defer v.mu.RUnlock()
	q := v.queues[queue]
	if q == nil {
		return nil
	}
	out := make([]Binding, 0, len(q.bindings))
	for b := range q.bindings {
		c := *b
		c.Target = nil
		out = append(out, c)
	}
	return out
}

// EnqueueTo puts msg in one queue without routing it, as the default
// exchange would but keeping msg's exchange and routing key: the MQTT
// listener replays a retained message to a new subscription this way.
// Errors: 404 if the queue does not exist; 406 for a bad expiration.
func (v *VHost) EnqueueTo(queue string, msg *Message) (PublishResult, error) {
	q := v.Queue(queue)
	if q == nil {
		return PublishResult{}, v.noQueue(queue)
	}
	ttl, err := v.accept(msg)
	if err != nil {
		return PublishResult{}, err
	}
	var res PublishResult
	accepted, rejected, pos := q.enqueue(msg, ttl)
	if accepted {
		res.Routed = 1
	}
	res.Rejected, res.Pos = rejected, pos
	return res, nil
}
