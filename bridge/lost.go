package bridge

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
