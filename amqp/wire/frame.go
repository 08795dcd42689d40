package wire

import (
	"encoding/binary"
	"errors"
	"io"

	"github.com/ferrymq/ferrymq/core"
)

// Frame types, the frame-end octet and sizes from the spec.
const (
	FrameMethod    uint8 = 1
	FrameHeader    uint8 = 2 // content header
	FrameBody      uint8 = 3
	FrameHeartbeat uint8 = 8 // channel 0, empty payload

	// FrameEnd closes every frame; any other octet is a FRAME_ERROR.
	FrameEnd uint8 = 0xCE

	// FrameMinSize is the frame-max every peer must accept, and the limit
	// that applies before connection.tune-ok has been negotiated.
	FrameMinSize = 4096

	// FrameOverhead is the frame header (type, channel, size) plus frame-end.
	FrameOverhead = 8

	// ProtocolHeader is what a 0-9-1 client sends first, and what the server
	// sends back before closing the socket when it gets anything else.
	ProtocolHeader = "AMQP\x00\x00\x09\x01"
)

const frameHeaderSize = 7

// errInvalidRead reports an io.Reader that returned a count outside its
// buffer, as bufio does; it is a bug in that reader, not in the peer.
var errInvalidRead = errors.New("wire: io.Reader returned an invalid count")

// Frame is one AMQP frame.
type Frame struct {
	Type    uint8
	Channel uint16
	// Payload is the frame's payload without header or frame-end. When the
	// Frame comes from Reader.ReadFrame it aliases the Reader's buffer: it is
	// valid only until the next call on that Reader, and whatever outlives
	// that call must be copied (DecodeMethod and DecodeContentHeader
	// already copy).
	Payload []byte
}

// Read buffer sizes, after nats' readLoop: start small so that idle
// connections cost little, double when a read fills the buffer, halve after
// repeated short reads. A frame bigger than maxBufSize still gets a buffer
// that fits it (up to the frame-max in force); it shrinks back the same way.
const (
	minBufSize     = 512
	maxBufSize     = 64 << 10
	shortsToShrink = 2
	maxEmptyReads  = 100
)

// Reader reads frames from an io.Reader (normally a net.Conn) through its own
// buffer, parsing them in place. It is not safe for concurrent use: the
// connection's read goroutine owns it.
//
// Reader performs no timeouts of its own. The connection sets read deadlines
// on the net.Conn (for example twice the heartbeat interval) and Reader
// returns the resulting error unchanged; after a timeout, or any other error
// from the io.Reader, the bytes already buffered are kept and ReadFrame can be
// called again. Closing the net.Conn from another goroutine interrupts a
// blocked ReadFrame the same way. Protocol errors (*Error) are sticky: the
// stream is out of step and every later call returns the same error.
type Reader struct {
	r          io.Reader
	buf        []byte
	start, end int   // buf[start:end] has been read but not consumed
	maxPayload int   // largest payload size accepted
	shorts     int   // consecutive reads that used less than half the buffer
	grow       bool  // the last read filled the buffer
	perr       error // sticky protocol error
}

// NewReader returns a Reader on r that accepts frames up to FrameMinSize, the
// limit before tuning; call SetMaxFrameSize once frame-max is negotiated.
// The buffer is allocated on the first read.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: r, maxPayload: FrameMinSize}
}

// SetMaxFrameSize sets the negotiated frame-max n. A frame whose declared
// payload size is over n is rejected with ErrFrameTooLarge before any buffer
// is grown for it. Strictly the limit for the payload is n-8; like RabbitMQ,
// Reader allows the 8 bytes of overhead on top, because some clients count
// frame-max as payload size. n below FrameMinSize (including 0, "no limit" in
// connection.tune) is raised to FrameMinSize: the server always proposes a
// limit, and never an unlimited one.
func (r *Reader) SetMaxFrameSize(n uint32) {
	r.maxPayload = int(max(n, FrameMinSize))
}

// ReadProtocolHeader reads the 8-octet protocol header a client opens with.
// It does not compare it with ProtocolHeader: on a mismatch the spec wants the
// server to write ProtocolHeader back before closing, which is the caller's
// business.
func (r *Reader) ReadProtocolHeader() ([8]byte, error) {
	var h [8]byte
	if err := r.fill(len(h)); err != nil {
		return h, err
	}
	copy(h[:], r.buf[r.start:])
	r.consume(len(h))
	return h, nil
}

// ReadFrame reads the next frame. The returned Payload aliases the Reader's
// buffer and is valid only until the next call on r.
//
// A declared size over the frame-max is ErrFrameTooLarge, a frame type other
// than 1, 2, 3, 8 is ErrUnknownFrameType, and a frame-end octet other than
// 0xCE is ErrBadFrameEnd; all three are checked before the payload is read.
// An io.EOF between frames is returned as io.EOF, one inside a frame as
// io.ErrUnexpectedEOF.
func (r *Reader) ReadFrame() (Frame, error) {
	if r.perr != nil {
		return Frame{}, r.perr
	}
	if err := r.fill(frameHeaderSize); err != nil {
		return Frame{}, err
	}
	h := r.buf[r.start : r.start+frameHeaderSize]
	typ := h[0]
	channel := binary.BigEndian.Uint16(h[1:])
	size := binary.BigEndian.Uint32(h[3:])
	switch typ {
	case FrameMethod, FrameHeader, FrameBody, FrameHeartbeat:
	default:
		r.perr = newError(ErrUnknownFrameType, "frame type "+itoa(int(typ)))
		return Frame{}, r.perr
	}
	// Compare in uint64 so that 0xFFFFFFFF cannot wrap on any platform, and
	// before fill grows the buffer: the size is the peer's word only.
	if uint64(size) > uint64(r.maxPayload) {
		r.perr = newError(ErrFrameTooLarge, "payload of "+itoa(int(size))+" bytes, frame-max allows "+itoa(r.maxPayload))
		return Frame{}, r.perr
	}
	total := frameHeaderSize + int(size) + 1
	if err := r.fill(total); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	p := r.start + frameHeaderSize
	if e := r.buf[p+int(size)]; e != FrameEnd {
		r.perr = newError(ErrBadFrameEnd, "frame-end octet "+strconvQuoteByte(e))
		return Frame{}, r.perr
	}
	// Cap the payload so a caller's append cannot overwrite the next frame.
	f := Frame{Type: typ, Channel: channel, Payload: r.buf[p : p+int(size) : p+int(size)]}
	r.consume(total)
	return f, nil
}

// FrameBuffered reports whether the next ReadFrame can return without reading
// from the underlying io.Reader, because a whole frame (or a header that will
// be rejected) is already buffered. A connection flushes its outbound buffer
// when this turns false: one write per read batch, nats-style.
func (r *Reader) FrameBuffered() bool {
	if r.perr != nil {
		return true
	}
	n := r.end - r.start
	if n < frameHeaderSize {
		return false
	}
	size := binary.BigEndian.Uint32(r.buf[r.start+3:])
	return uint64(size) > uint64(r.maxPayload) || n >= frameHeaderSize+int(size)+1
}

func (r *Reader) consume(n int) {
	r.start += n
	if r.start == r.end {
		r.start, r.end = 0, 0
	}
}

// fill makes sure at least n bytes are buffered, reading as needed. It may
// move or replace the buffer, which is why payloads live only until the next
// call. n is at most maxPayload+8, so a hostile size never reaches here.
func (r *Reader) fill(n int) error {
	empties := 0
	for r.end-r.start < n {
		r.makeRoom(n)
		m, err := r.r.Read(r.buf[r.end:])
		if m < 0 || m > len(r.buf)-r.end {
			return errInvalidRead // a broken io.Reader; never trust its count
		}
		r.adapt(m)
		r.end += m
		if r.end-r.start >= n {
			// Enough to go on; a pending error will come back on the next read.
			return nil
		}
		if err != nil {
			if err == io.EOF && r.end > r.start {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if m == 0 {
			if empties++; empties >= maxEmptyReads {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}

// makeRoom ensures buf[start:] can hold n bytes and has free space at end,
// growing, shrinking or compacting as the read history suggests.
func (r *Reader) makeRoom(n int) {
	size := len(r.buf)
	switch {
	case size == 0:
		size = minBufSize
	case r.grow && size < maxBufSize:
		size *= 2
	case r.shorts > shortsToShrink && size > minBufSize && r.end-r.start <= size/4:
		size = max(size/2, minBufSize)
		r.shorts = 0
	}
	size = max(size, n)
	if size != len(r.buf) {
		nb := make([]byte, size)
		r.end = copy(nb, r.buf[r.start:r.end])
		r.start = 0
		r.buf = nb
		r.grow = false
		return
	}
	if r.start > 0 && (len(r.buf)-r.start < n || r.end == len(r.buf)) {
		r.end = copy(r.buf, r.buf[r.start:r.end])
		r.start = 0
	}
}

// adapt records whether a read of m bytes filled the free space (a busy
// connection: grow next time) or used less than half the buffer (a quiet
// one: shrink after a few).
func (r *Reader) adapt(m int) {
	free := len(r.buf) - r.end
	switch {
	case m == free:
		r.grow, r.shorts = true, 0
	case m < len(r.buf)/2:
		r.grow = false
		r.shorts++
	default:
		r.grow, r.shorts = false, 0
	}
}

// AppendMethod appends the method frame payload of m: class id, method id,
// arguments.
func AppendMethod(b []byte, m Method) []byte {
	c, id := m.ID()
	b = appendShort(b, c)
	b = appendShort(b, id)
	return m.Append(b)
}

// AppendMethodFrame appends a complete method frame for m on channel. The
// size is patched in after encoding, so no intermediate buffer is used.
// It panics only as Method.Append does.
func AppendMethodFrame(b []byte, channel uint16, m Method) []byte {
	start := len(b)
	b = appendFrameHeader(b, FrameMethod, channel)
	b = AppendMethod(b, m)
	return endFrame(b, start)
}

// AppendContentHeaderFrame appends a content header frame announcing a body of
// bodySize bytes with properties p (nil for none); see AppendContentHeader.
func AppendContentHeaderFrame(b []byte, channel uint16, classID uint16, bodySize uint64, p *core.Properties) []byte {
	start := len(b)
	b = appendFrameHeader(b, FrameHeader, channel)
	b = AppendContentHeader(b, classID, bodySize, p)
	return endFrame(b, start)
}

// AppendBodyFrames appends body as body frames of at most frameMax bytes each
// (frameMax-8 of payload). An empty body has no body frames, as the spec
// says. frameMax 0 means unlimited (one frame); values between 1 and
// FrameMinSize are raised to FrameMinSize, the least a peer must accept.
func AppendBodyFrames(b []byte, channel uint16, body []byte, frameMax uint32) []byte {
	chunk := len(body)
	if frameMax != 0 {
		chunk = int(max(frameMax, FrameMinSize) - FrameOverhead)
	}
	for len(body) > 0 {
		n := min(chunk, len(body))
		b = append(b, FrameBody, byte(channel>>8), byte(channel))
		b = appendLong(b, uint32(n))
		b = append(b, body[:n]...)
		b = append(b, FrameEnd)
		body = body[n:]
	}
	return b
}

// AppendHeartbeat appends a heartbeat frame.
func AppendHeartbeat(b []byte) []byte {
	return append(b, FrameHeartbeat, 0, 0, 0, 0, 0, 0, FrameEnd)
}

// AppendDeliver appends basic.deliver, its content header and its body
// frames in one pass: the delivery hot path. It writes the same bytes as
// AppendMethodFrame(&BasicDeliver{...}) followed by AppendContentHeaderFrame
// and AppendBodyFrames, without boxing a Method; into a buffer with room it
// does not allocate.
func AppendDeliver(b []byte, channel uint16, consumerTag string, deliveryTag uint64, redelivered bool,
	exchange, routingKey string, p *core.Properties, body []byte, frameMax uint32) []byte {
	start := len(b)
	b = appendFrameHeader(b, FrameMethod, channel)
	b = appendShort(b, ClassBasic)
	b = appendShort(b, 60) // basic.deliver
	b = appendShortstr(b, consumerTag)
	b = appendLonglong(b, deliveryTag)
	var bits uint8
	if redelivered {
		bits = 1
	}
	b = append(b, bits)
	b = appendShortstr(b, exchange)
	b = appendShortstr(b, routingKey)
	b = endFrame(b, start)
	b = AppendContentHeaderFrame(b, channel, ClassBasic, uint64(len(body)), p)
	return AppendBodyFrames(b, channel, body, frameMax)
}

// appendFrameHeader appends type, channel and a size placeholder that
// endFrame patches.
func appendFrameHeader(b []byte, typ uint8, channel uint16) []byte {
	return append(b, typ, byte(channel>>8), byte(channel), 0, 0, 0, 0)
}

func endFrame(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start+3:], uint32(len(b)-start-frameHeaderSize))
	return append(b, FrameEnd)
}
