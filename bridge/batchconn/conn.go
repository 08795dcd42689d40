// Package batchconn wraps a client's net.Conn so that many small writes
// leave in few syscalls and reads are buffered. MQTT and AMQP client
// libraries write each packet or frame straight to the socket, which costs
// a syscall per message when a bridge link or a load client pipelines
// thousands of them.
package batchconn

import (
	"bufio"
	"net"
	"runtime"
	"sync"
	"time"
)

// Conn wraps a client connection so that it costs as few syscalls as
// possible:
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
// The hand-off to the writer goroutine adds a little latency to a lone
// write; use it where throughput matters more.
type Conn struct {
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

// New wraps c and starts its writer goroutine, which ends when Close is
// called or a write fails.
func New(c net.Conn) *Conn {
	b := &Conn{
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

// Lock and Unlock bracket the writes of one packet (paho.golang looks for a
// sync.Locker on its connection).
func (b *Conn) Lock() { b.packet.Lock() }

// Unlock ends the packet Lock began.
func (b *Conn) Unlock() { b.packet.Unlock() }

// Read reads through the connection's 64 KiB buffer.
func (b *Conn) Read(p []byte) (int, error) { return b.r.Read(p) }

// Write queues p and returns; the error of an earlier failed write is
// returned by every later Write (bufio's sticky errors).
func (b *Conn) Write(p []byte) (int, error) {
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

func (b *Conn) writeLoop() {
	defer close(b.done)
	for range b.kick {
		// Let the writers that woke this goroutine add what they have
		// before it is taken: on a busy machine the goroutine otherwise
		// wakes for each packet and writes it alone. When nothing else is
		// runnable, Gosched returns at once.
		runtime.Gosched()
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
func (b *Conn) Close() error {
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
