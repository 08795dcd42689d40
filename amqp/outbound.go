package amqp

import (
	"net"
	"sync"
	"time"

	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// outbound is a connection's write side: a core.Outbox that any goroutine
// appends frames to under mu, and a writer goroutine that takes its buffer
// and writes it to the socket without holding mu. Past the Outbox's
// high-water mark, deliveries are refused (the queue keeps them until the
// writer has emptied the buffer and resumes the consumers) and the reader
// stops reading, so a client that does not read costs at most about the
// mark plus one batch of replies.
type outbound struct {
	nc       net.Conn
	frameMax uint32 // set once before writeLoop starts

	mu      sync.Mutex
	box     core.Outbox
	closed  bool // no more writes: the connection is ending or the socket failed
	drained *sync.Cond
	// wrote is set by the writer after each write, for the heartbeat
	// ticker: a heartbeat is only needed when nothing else went out.
	wrote bool

	kick     chan struct{} // buffer went from empty to non-empty
	finished chan struct{} // closed by finish: flush and stop
	stopped  chan struct{} // closed when writeLoop returns
}

func (o *outbound) init(nc net.Conn) {
	o.nc = nc
	o.drained = sync.NewCond(&o.mu)
	o.kick = make(chan struct{}, 1)
	o.finished = make(chan struct{})
	o.stopped = make(chan struct{})
}

// signalLocked is called with mu held after appending to the buffer, with
// the length before; it wakes the writer when the buffer was empty.
func (o *outbound) signalLocked(before int) {
	if before == 0 {
		select {
		case o.kick <- struct{}{}:
		default:
		}
	}
}

// writeMethod appends one method frame.
func (o *outbound) writeMethod(channel uint16, m wire.Method) {
	o.mu.Lock()
	if !o.closed {
		n := len(o.box.Buf)
		o.box.Buf = wire.AppendMethodFrame(o.box.Buf, channel, m)
		o.signalLocked(n)
	}
	o.mu.Unlock()
}

// writeContent appends a method with content (basic.return, basic.get-ok).
func (o *outbound) writeContent(channel uint16, m wire.Method, msg *core.Message) {
	o.mu.Lock()
	if !o.closed {
		b := &o.box.Buf
		n := len(*b)
		*b = wire.AppendMethodFrame(*b, channel, m)
		*b = wire.AppendContentHeaderFrame(*b, channel, wire.ClassBasic, uint64(len(msg.Body)), &msg.Properties)
		*b = wire.AppendBodyFrames(*b, channel, msg.Body, o.frameMax)
		o.signalLocked(n)
	}
	o.mu.Unlock()
}

// waitDrained blocks the reader while the buffer is full, so a peer that
// publishes but does not read cannot grow it without bound.
func (o *outbound) waitDrained() {
	o.mu.Lock()
	for o.box.Full() && !o.closed {
		o.drained.Wait()
	}
	o.mu.Unlock()
}

// finish makes the writer flush what is buffered and stop, and waits for
// it (bounded by sendTimeout on the write). Later writes are dropped.
func (o *outbound) finish() {
	select {
	case <-o.finished:
	default:
		close(o.finished)
	}
	<-o.stopped
}

// writeLoop writes the buffer whenever it is non-empty, and a heartbeat
// frame every heartbeat/2 in which nothing else was written.
func (o *outbound) writeLoop(heartbeat time.Duration) {
	defer close(o.stopped)
	var tick <-chan time.Time
	if heartbeat > 0 {
		t := time.NewTicker(heartbeat / 2)
		defer t.Stop()
		tick = t.C
	}
	for {
		finishing := false
		select {
		case <-o.kick:
		case <-tick:
			o.mu.Lock()
			if !o.wrote && len(o.box.Buf) == 0 {
				o.box.Buf = wire.AppendHeartbeat(o.box.Buf)
			}
			o.wrote = false
			o.mu.Unlock()
		case <-o.finished:
			finishing = true
		}
		if err := o.flush(); err != nil || finishing {
			o.close(err)
			return
		}
	}
}

// flush writes the buffer until it is empty, then resumes the consumers
// that were refused for lack of room.
func (o *outbound) flush() error {
	for {
		o.mu.Lock()
		if len(o.box.Buf) == 0 || o.closed {
			resume := o.box.TakeRefused()
			o.mu.Unlock()
			for _, c := range resume {
				c.Resume()
			}
			return nil
		}
		buf := o.box.Take()
		o.mu.Unlock()

		o.nc.SetWriteDeadline(time.Now().Add(sendTimeout))
		_, err := o.nc.Write(buf)

		o.mu.Lock()
		o.wrote = true
		o.box.Written(buf)
		o.drained.Broadcast()
		o.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// close marks the buffer closed, releases a waiting reader and refuses
// further deliveries. After a write error the socket is closed too, so the
// reader notices; otherwise the reader closes it when it is done.
func (o *outbound) close(err error) {
	o.mu.Lock()
	o.closed = true
	o.box.Reset()
	o.drained.Broadcast()
	o.mu.Unlock()
	if err != nil {
		o.nc.Close()
	}
}
