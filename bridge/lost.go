package bridge

import "time"

// flyingWait bounds how long a lost connection's unconfirmed publishes may
// take to come back to the queue.
const flyingWait = 30 * time.Second

// waitFlying waits until every publish of the connection just closed was
// confirmed or failed back into the queue, so that the next connection
// starts from the queue's head, in order.
func (r *runner) waitFlying() {
	deadline := time.Now().Add(flyingWait)
	for r.flying.Load() > 0 {
		if time.Now().After(deadline) {
			r.log.Warn("bridge: publishes of the lost connection still unsettled; reconnecting anyway, order may suffer",
				"unsettled", r.flying.Load(), "waited", flyingWait)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ensureQueue makes the store-and-forward queue again if it was deleted
// (queue.delete by an administrator, or the management API): the link
// must keep buffering, and the loss of what the queue held must not be
// silent. RabbitMQ's shovels instead stop with an error; a bridge on an
// unattended gateway is better off going on and saying so.
func (r *runner) ensureQueue() error {
	r.qmu.Lock()
	defer r.qmu.Unlock()
	old := r.queue.Load()
	if cur := r.m.vhost.Queue(r.queueName()); cur != nil && cur == old {
		return nil
	}
	if err := r.declare(); err != nil {
		return err
	}
	// The new queue counts its drops from 0.
	r.mu.Lock()
	r.reportedDropCount = 0
	r.mu.Unlock()
	lost := r.lastBacklog.Swap(0)
	r.lostMsgs.Add(uint64(lost))
	n := r.queueLost.Add(1)
	r.log.Warn("bridge queue was deleted; made again, the messages it held are lost",
		"queue", r.queueName(), "lost_messages", lost, "times", n)
	return nil
}
