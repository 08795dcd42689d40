package core

import "time"

// deadLetter is a message leaving a queue for its dead-letter exchange,
// collected under the queue lock and published after it is released.
type deadLetter struct {
	msg     *Message
	reason  string // rejected, expired, maxlen
	queue   string
	dlx     string
	dlrk    string
	hasDLRK bool
}

// deadLetter republishes d's message to its dead-letter exchange, as
// rabbit_dead_letter does. A missing dead-letter exchange drops the message.
// The caller holds no lock.
func (v *VHost) deadLetter(d *deadLetter) {
	x := v.exchange(d.dlx)
	if x == nil {
		v.log.Debug("dead-letter exchange missing: message dropped",
			"vhost", v.name, "queue", d.queue, "exchange", d.dlx, "reason", d.reason)
		v.countDrop(DropDeadLetterUnroutable, false)
		return
	}
	// The internal flag only guards client publishes; a dead-letter exchange
	// may be internal.
	v.publish(x, makeDeadLetter(d, v.clock.Now()), -1, d.reason)
}

// makeDeadLetter returns the message to republish: a new Message sharing the
// original's body, with a copied header table carrying the updated x-death
// and x-first-death-*/x-last-death-* headers, and without the expiration
// property (it moves into the x-death entry as original-expiration). CC and
// BCC headers are not interpreted: routing-keys is the publish routing key
// only, and the republish does not route to CC keys.
func makeDeadLetter(d *deadLetter, now time.Time) *Message {
	old := d.msg
	props := old.Properties
	headers := make(Table, len(props.Headers)+7)
	for k, v := range props.Headers {
		headers[k] = v
	}
	info := Table{
		"reason":       d.reason,
		"queue":        d.queue,
		"time":         now.Truncate(time.Second).UTC(),
		"exchange":     old.Exchange,
		"routing-keys": []any{old.RoutingKey},
	}
	if props.Flags&FlagExpiration != 0 || props.Expiration != "" {
		info["original-expiration"] = props.Expiration
	}
	headers["x-death"] = updateXDeath(headers["x-death"], info, d.queue, d.reason)
	if _, ok := headers["x-first-death-reason"]; !ok {
		headers["x-first-death-reason"] = d.reason
		headers["x-first-death-queue"] = d.queue
		headers["x-first-death-exchange"] = old.Exchange
	}
	headers["x-last-death-reason"] = d.reason
	headers["x-last-death-queue"] = d.queue
	headers["x-last-death-exchange"] = old.Exchange

	props.Headers = headers
	props.Flags |= FlagHeaders
	props.Expiration = ""
	props.Flags &^= FlagExpiration
	key := old.RoutingKey
	if d.hasDLRK {
		key = d.dlrk
	}
	return &Message{
		ID:         NextMessageID(),
		Exchange:   d.dlx,
		RoutingKey: key,
		Properties: props,
		Body:       old.Body,
		Published:  now,
	}
}

// updateXDeath returns a new x-death array, newest death first. A death
// for the same queue and reason as an earlier one does not add an entry: the
// earlier entry moves to the front with its count incremented and its other
// fields (time, exchange, routing-keys, original-expiration) as first
// recorded, as RabbitMQ does. Otherwise info, with count 1, is prepended.
// The old array and its tables belong to the original message and are not
// modified.
func updateXDeath(old any, info Table, queue, reason string) []any {
	deaths, _ := old.([]any)
	out := make([]any, 1, len(deaths)+1)
	info["count"] = int64(1)
	out[0] = info
	matched := false
	for _, e := range deaths {
		t, ok := e.(Table)
		if ok && !matched && t["queue"] == queue && t["reason"] == reason {
			matched = true
			again := make(Table, len(t))
			for k, v := range t {
				again[k] = v
			}
			n, _ := IntArg(t["count"])
			again["count"] = n + 1
			out[0] = again
			continue
		}
		out = append(out, e)
	}
	return out
}

// isCycle reports whether dead-lettering into queue would close a cycle
// made only of automatic deaths (rabbit_dead_letter:is_cycle): queue occurs
// in the x-death history and no entry from the newest up to and including
// that occurrence has reason "rejected".
func isCycle(queue string, deaths []any) bool {
	for _, e := range deaths {
		t, ok := e.(Table)
		if !ok {
			return false
		}
		if t["reason"] == reasonRejected {
			return false
		}
		if t["queue"] == queue {
			return true
		}
	}
	return false
}
