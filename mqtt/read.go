package mqtt

import (
	"errors"
	"os"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// linger is how long a reading goroutine waits for more input before the
// client is parked: long enough that a busy client keeps its goroutine
// (and Go's netpoller) between packets, short enough that idle ones do
// not keep stacks.
const linger = 200 * time.Millisecond

// A client borrows a small read buffer while it has input; one that
// fills it with a single read (a busy publisher) gets a larger one, up to
// maxReadBuf, for as long as it stays busy. Small buffers keep a burst of
// connecting devices cheap: each holds one for the linger.
const (
	readBufSize = 512
	maxReadBuf  = 64 << 10
)

var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// errParked ends a reading goroutine whose client the poller now watches.
var errParked = errors.New("mqtt: parked")

// reader is a client's input: a buffer borrowed while there are bytes to
// read, and where the next packet starts in it.
type reader struct {
	buf    *[]byte // borrowed from readBufs, or grown for a busy client or a large packet
	in     []byte  // unparsed input, a prefix of *buf shifted to its start
	active bool    // something was read since the read deadline was set
	armed  bool    // a read deadline is set
	// handled counts packets up to 2: after the CONNECT alone (1) the
	// client parks without lingering.
	handled int
}

func (r *reader) release() {
	if r.buf != nil && cap(*r.buf) == readBufSize {
		readBufs.Put(r.buf)
	}
	r.buf, r.in = nil, nil
}

// serve reads and handles packets until the connection ends or the
// client parks. It owns the read side (readState running).
func (c *client) serve() {
	err := c.readPackets()
	if errors.Is(err, errParked) {
		return
	}
	c.close(err)
	c.finish()
}

func (c *client) readPackets() (err error) {
	// Packet counts are kept here and added to the client's once per
	// batch of input, not once per packet.
	var pkts, pubs uint64
	flush := func() {
		if pkts > 0 {
			c.stats.pktIn.Add(pkts)
			c.stats.pubIn.Add(pubs)
			pkts, pubs = 0, 0
		}
	}
	defer flush()
	defer func() {
		// A malformed packet must close its connection, never the broker.
		if perr := recovered(recover()); perr != nil {
			c.srv.log.Warn("mqtt: connection dropped", "client", c.id, "err", perr)
			err = perr
		}
	}()
	for {
		for {
			fh, body, n, err := c.nextPacket()
			if err != nil {
				return err
			}
			if n == 0 {
				break
			}
			if c.closing.Load() {
				return nil // taken over, or closed: the rest is not ours to act on
			}
			pkts++
			if fh.Type == packets.Publish {
				pubs++
			}
			err = c.handle(fh, body)
			c.rd.in = c.rd.in[n:]
			if err != nil {
				return err
			}
			c.rd.handled = min(c.rd.handled+1, 2)
		}
		flush()
		if c.closing.Load() {
			return nil
		}
		// Not a TLS client: crypto/tls may hold the next packet decrypted,
		// where the socket's readiness would not show it.
		if c.rd.handled == 1 && len(c.rd.in) == 0 && c.parkable && !c.tls {
			// Connected and nothing more to say yet, as most devices: park
			// now, not after a linger. The goroutine that set the session
			// up has a deep stack; a burst of connecting devices would
			// otherwise hold thousands of them at once.
			c.rd.handled, c.rd.armed = 2, false
			c.rd.release()
			if c.park() {
				return errParked
			}
		}
		if err := c.fill(); err != nil {
			return err
		}
	}
}

// nextPacket returns the next whole packet in the input, n == 0 if it has
// not all arrived. The fixed header's remaining length has at most four
// bytes [MQTT-1.5.5]; mochi would read a fifth as part of a huge length.
func (c *client) nextPacket() (fh packets.FixedHeader, body []byte, n int, err error) {
	in := c.rd.in
	if len(in) < 2 {
		return fh, nil, 0, nil
	}
	if err := fh.Decode(in[0]); err != nil {
		return fh, nil, 0, err
	}
	length, shift, i := 0, 0, 1
	for {
		if i >= len(in) {
			return fh, nil, 0, nil
		}
		b := in[i]
		length |= int(b&0x7F) << shift
		shift += 7
		i++
		if b&0x80 == 0 {
			break
		}
		if i == 5 {
			return fh, nil, 0, packets.ErrMalformedVariableByteInteger
		}
	}
	if uint64(i+length) > uint64(c.srv.cfg.MaxPacketSize) {
		return fh, nil, 0, packets.ErrPacketTooLarge // [MQTT-3.2.2-15]
	}
	if len(in) < i+length {
		if len(in) == cap(*c.rd.buf) {
			// The packet fills the buffer and more is to come: grow it
			// with what arrived, doubling up to the packet's size, so a
			// fixed header announcing 16 MiB costs nothing until the
			// bytes do. Under a resource alarm the reader stops here, as
			// it would at the PUBLISH: a partly received packet is
			// memory too.
			if !c.waitUnblocked() {
				return fh, nil, 0, nil // closing: readPackets sees it
			}
			c.rd.reserve(min(i+length, max(2*len(in), maxReadBuf)))
		}
		return fh, nil, 0, nil
	}
	fh.Remaining = length
	return fh, in[i : i+length], i + length, nil
}

// reserve makes room for a packet of size bytes.
func (r *reader) reserve(size int) {
	if cap(*r.buf) >= size {
		return
	}
	b := make([]byte, size)
	n := copy(b, r.in)
	r.release()
	r.buf, r.in = &b, b[:n]
}

// fill reads more input. A parkable client silent for a whole linger
// parks: its goroutine ends (errParked) and the poller starts another when
// bytes arrive. Others block in Read; a WebSocket connection could not
// take a read deadline anyway (gorilla's are fatal).
func (c *client) fill() error {
	r := &c.rd
	for {
		if r.buf != nil && len(r.in) == 0 && cap(*r.buf) > maxReadBuf {
			r.release() // a large packet's buffer, not kept for the next
		}
		if r.buf == nil {
			b := readBufs.Get().(*[]byte)
			r.buf, r.in = b, (*b)[:0]
		} else if cap(r.in) < cap(*r.buf) {
			// Move the start of a packet to the front, to read after it.
			r.in = (*r.buf)[:copy(*r.buf, r.in)]
		}
		if c.parkable && !r.armed {
			c.conn.SetReadDeadline(time.Now().Add(linger))
			r.armed, r.active = true, false
		}
		n, err := c.conn.Read((*r.buf)[len(r.in):])
		if n > 0 {
			c.stats.bytesIn.Add(uint64(n))
			r.in = (*r.buf)[:len(r.in)+n]
			if len(r.in) == cap(*r.buf) && cap(*r.buf) < maxReadBuf {
				r.reserve(2 * cap(*r.buf)) // more is likely waiting
			}
			r.active = true
			c.lastRead.Store(time.Now().UnixNano())
			return nil
		}
		if err == nil {
			continue
		}
		if !c.parkable || !errors.Is(err, os.ErrDeadlineExceeded) || c.closing.Load() {
			return err
		}
		r.armed = false
		if r.active || len(r.in) > 0 {
			continue // busy in the last linger, or inside a packet
		}
		r.release()
		if c.park() {
			return errParked
		}
	}
}

// park hands the client to the poller, which starts serve again when it
// has input. It reports false if the client must go on reading instead.
func (c *client) park() bool {
	c.readState.Store(readParked)
	if c.closing.Load() {
		// close may have seen it running: one of us finishes it.
		return !c.readState.CompareAndSwap(readParked, readRunning)
	}
	if err := c.srv.poller.watch(c); err != nil {
		if c.readState.CompareAndSwap(readParked, readRunning) {
			c.srv.log.Debug("mqtt: cannot park client", "client", c.id, "err", err)
			c.parkable = false
			c.conn.SetReadDeadline(time.Time{})
			return false
		}
	}
	return true
}

// wake runs on the poller's goroutine when a parked client has input.
func (c *client) wake() {
	if c.readState.CompareAndSwap(readParked, readRunning) {
		go c.serve()
	}
}
