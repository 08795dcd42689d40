package main

import (
	"bufio"
	"net"
	"sync"
	"time"
)

// batchConn wraps a client connection so that the load client costs the
// broker's machine as few syscalls as possible:
//
//   - Writes are appended to a buffer that one goroutine per connection
//     writes out; while it is in the write syscall, later writes pile up and
//     leave together (write coalescing, nats-style). The client libraries
//     flush once per message (amqp091-go) or write each packet straight to
//     the socket (paho), which would be one syscall per message.
//   - Reads go through a 64 KiB bufio.Reader: paho reads a packet's header
//     byte by byte.
//
// It also implements sync.Locker, which paho.golang takes around the several
// Write calls of one packet, so that packets from different goroutines never
// interleave.
//
// The latency scenarios use plain connections: there the hand-off to the
// writer goroutine would be measured too.
type batchConn struct {
	net.Conn
	r *bufio.Reader

	packet sync.Mutex // Lock/Unlock: held by paho.golang across one packet

	mu      sync.Mutex
	space   sync.Cond // signalled when the writer has taken the buffer
	buf     []byte    // guarded by mu: bytes waiting for the writer
	spare   []byte    // guarded by mu: the other buffer, reused
	err     error     // guarded by mu: sticky write error
	closing bool      // guarded by mu

	kick chan struct{} // capacity 1: data is waiting
	done chan struct{} // closed when the writer goroutine has returned
}

// maxPending is how many bytes a writer may queue before Write blocks.
const maxPending = 1 << 20

func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{
		Conn: c,
		r:    bufio.NewReaderSize(c, 64<<10),
		buf:  make([]byte, 0, 64<<10),
		kick: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	b.space.L = &b.mu
	go b.writeLoop()
	return b
}

func (b *batchConn) Lock()   { b.packet.Lock() }
func (b *batchConn) Unlock() { b.packet.Unlock() }

func (b *batchConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// Write queues p and returns; the error of an earlier failed write is
// returned by every later Write (bufio's sticky errors).
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	for len(b.buf) >= maxPending && b.err == nil && !b.closing {
		b.space.Wait()
	}
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	if b.closing {
		b.mu.Unlock()
		return 0, net.ErrClosed
	}
	b.buf = append(b.buf, p...)
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (b *batchConn) writeLoop() {
	defer close(b.done)
	for range b.kick {
		for {
			b.mu.Lock()
			out := b.buf
			if len(out) == 0 {
				closing := b.closing
				b.mu.Unlock()
				if closing {
					return
				}
				break
			}
			b.buf = b.spare[:0]
			b.spare = nil
			b.space.Broadcast()
			b.mu.Unlock()

			_, err := b.Conn.Write(out)

			b.mu.Lock()
			b.spare = out[:0]
			if err != nil && b.err == nil {
				b.err = err
				b.space.Broadcast()
			}
			failed := b.err != nil
			b.mu.Unlock()
			if failed {
				return
			}
		}
	}
}

// Close writes out what is queued (for at most 2 s) and closes the
// connection.
func (b *batchConn) Close() error {
	b.mu.Lock()
	already := b.closing
	b.closing = true
	b.space.Broadcast()
	b.mu.Unlock()
	if !already {
		select {
		case b.kick <- struct{}{}:
		default:
		}
		select {
		case <-b.done:
		case <-time.After(2 * time.Second):
		}
	}
	return b.Conn.Close()
}

// dialTCP connects to addr with TCP_NODELAY (Go's default) and wraps the
// connection in a batchConn when batch is set.
func dialTCP(addr string, batch bool) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	if batch {
		return newBatchConn(c), nil
	}
	return c, nil
}
