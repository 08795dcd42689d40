package core

import (
	"fmt"
	"time"
)

// Recover rebuilds the durable state a Store read back at start-up: it is
// called once, before any client is served. Nothing it recreates is written
// back to the store. Messages come back paged out (their bodies stay on
// disk until delivered), in their original order, with redelivered set if
// they had been delivered; their TTLs and the queues' x-expires keep
// counting from the original times. A stored binding whose source or
// destination is gone is skipped.
func (b *Broker) Recover(rec Recovery) error {
	if b.store == nil {
		return fmt.Errorf("recover: the broker has no store")
	}
	err := rec.Exchanges(func(vhost string, d ExchangeDecl) error {
		v := b.AddVHost(vhost)
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.exchanges[d.Name] == nil {
			d.Passive = false
			v.exchanges[d.Name] = newExchange(d)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover exchanges: %w", err)
	}
	var queues []*Queue
	err = rec.Queues(func(r QueueRecord) error {
		q, err := b.AddVHost(r.VHost).recoverQueue(r)
		if err != nil {
			return err
		}
		queues = append(queues, q)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover queues: %w", err)
	}
	err = rec.Bindings(func(vhost string, r BindingRecord) error {
		b.AddVHost(vhost).recoverBinding(r)
		return nil
	})
	if err != nil {
		return fmt.Errorf("recover bindings: %w", err)
	}
	for _, q := range queues {
		if err := q.recoverMessages(rec); err != nil {
			return fmt.Errorf("recover messages of queue '%s' in vhost '%s': %w", q.name, q.vhost.name, err)
		}
	}
	if id := rec.MaxMessageID(); id > messageIDs.Load() {
		messageIDs.Store(id)
	}
	return nil
}

func (v *VHost) recoverQueue(r QueueRecord) (*Queue, error) {
	cfg, err := parseQueueArgs(r.Name, v.name, r.Arguments)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if q := v.queues[r.Name]; q != nil {
		return q, nil
	}
	q := newQueue(v, QueueDecl{Name: r.Name, Durable: true, AutoDelete: r.AutoDelete, Arguments: r.Arguments}, r.Name, cfg)
	q.mu.Lock()
	q.lastUsed = r.LastUsed
	if cfg.expires != 0 {
		idle := time.Duration(q.now() - r.LastUsed)
		q.armExpiresLocked(max(cfg.expires-idle, 0))
	}
	q.mu.Unlock()
	v.queues[r.Name] = q
	return q, nil
}

func (v *VHost) recoverBinding(r BindingRecord) {
	v.mu.Lock()
	defer v.mu.Unlock()
	src := v.exchanges[r.Source]
	if src == nil || src.isDefault {
		return
	}
	b := &Binding{Source: r.Source, Destination: r.Destination, ToExchange: r.ToExchange, RoutingKey: r.RoutingKey, Arguments: r.Arguments}
	if r.ToExchange {
		dst := v.exchanges[r.Destination]
		if dst == nil {
			return
		}
		b.Target = dst
		src.mu.Lock()
		added := src.m.add(b)
		src.mu.Unlock()
		if added {
			dst.inbound[b] = struct{}{}
		}
		return
	}
	q := v.queues[r.Destination]
	if q == nil {
		return
	}
	b.Target = q
	src.mu.Lock()
	added := src.m.add(b)
	src.mu.Unlock()
	if added {
		q.bindings[b] = struct{}{}
	}
}

// recoverMessages loads the queue's message references, paged out.
func (q *Queue) recoverMessages(rec Recovery) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	err := rec.Messages(q.vhost.name, q.name, func(m StoredMessage) error {
		q.pushLocked(entry{
			id: m.ID, seq: m.Seq, deadline: m.Deadline, size: int32(m.Size), prio: m.Priority,
			redelivered: m.Delivered, stored: true,
		})
		q.nextSeq = max(q.nextSeq, m.Seq)
		return nil
	})
	if q.expiring > 0 {
		q.armTTLLocked(q.now())
	}
	return err
}
