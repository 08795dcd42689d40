package wire

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"testing"
	"testing/iotest"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// chunkReader returns its chunks one Read at a time, like a socket that
// delivers a frame in pieces.
type chunkReader struct{ chunks [][]byte }

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.chunks) > 0 && len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	return n, nil
}

// splits returns readers over raw cut in different places: whole, in two
// halves, at every offset for short inputs, and one byte at a time (nats'
// split_test habit).
func splits(raw []byte) map[string]func() io.Reader {
	s := map[string]func() io.Reader{
		"whole":    func() io.Reader { return bytes.NewReader(raw) },
		"halves":   func() io.Reader { return &chunkReader{chunks: [][]byte{raw[:len(raw)/2], raw[len(raw)/2:]}} },
		"one byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(raw)) },
		"data+EOF": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(raw)) },
	}
	if len(raw) < 64 {
		for i := 1; i < len(raw); i++ {
			s["cut at "+itoa(i)] = func() io.Reader {
				return &chunkReader{chunks: [][]byte{append([]byte{}, raw[:i]...), append([]byte{}, raw[i:]...)}}
			}
		}
	}
	return s
}

func TestReaderSplitReads(t *testing.T) {
	for _, tc := range goldenCases {
		if tc.kind != kindStream {
			continue
		}
		for name, mk := range splits(tc.raw) {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				got, err := readStream(NewReader(mk()))
				if !errors.Is(err, tc.err) {
					t.Fatalf("error %v, want %v", err, tc.err)
				}
				want, _ := tc.want.([]Frame)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("frames %v, want %v", got, want)
				}
			})
		}
	}
}

func TestReaderProtocolHeader(t *testing.T) {
	raw := cat([]byte(ProtocolHeader), AppendHeartbeat(nil))
	for name, mk := range splits(raw) {
		r := NewReader(mk())
		h, err := r.ReadProtocolHeader()
		if err != nil || string(h[:]) != ProtocolHeader {
			t.Fatalf("%s: %q %v", name, h, err)
		}
		if f, err := r.ReadFrame(); err != nil || f.Type != FrameHeartbeat {
			t.Fatalf("%s: %v %v", name, f, err)
		}
	}
	_, err := NewReader(bytes.NewReader([]byte("AMQP"))).ReadProtocolHeader()
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("short header: %v", err)
	}
}

// TestReaderRejectsBeforeAllocating feeds a header declaring a huge payload:
// the reader must fail without growing its buffer (garagemq allocates first).
func TestReaderRejectsBeforeAllocating(t *testing.T) {
	for _, size := range []uint32{FrameMinSize + 1, 1 << 30, 0xFFFFFFFF} {
		r := NewReader(bytes.NewReader(cat(u8(FrameBody), u16(1), u32(size))))
		if _, err := r.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("size %d: %v", size, err)
		}
		if len(r.buf) > minBufSize {
			t.Fatalf("size %d: buffer grew to %d", size, len(r.buf))
		}
		// Sticky: the stream is out of step.
		if _, err := r.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
			t.Fatalf("second read: %v", err)
		}
	}
}

func TestReaderMaxFrameSize(t *testing.T) {
	const max = 131072
	ok := rawFrame(FrameBody, 1, make([]byte, max))
	r := NewReader(bytes.NewReader(cat(ok, rawFrame(FrameBody, 1, make([]byte, max+1)))))
	if _, err := r.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("before tuning: %v", err)
	}
	r = NewReader(bytes.NewReader(cat(ok, rawFrame(FrameBody, 1, make([]byte, max+1)))))
	r.SetMaxFrameSize(max)
	if f, err := r.ReadFrame(); err != nil || len(f.Payload) != max {
		t.Fatalf("at frame-max: %v", err)
	}
	if _, err := r.ReadFrame(); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("over frame-max: %v", err)
	}
	r.SetMaxFrameSize(0)
	if r.maxPayload != FrameMinSize {
		t.Fatalf("frame-max 0 gave %d", r.maxPayload)
	}
}

// TestReaderBufferBreathes checks the nats readLoop habit: the buffer grows
// for a big frame and under load, and shrinks back after short reads.
func TestReaderBufferBreathes(t *testing.T) {
	big := rawFrame(FrameBody, 1, make([]byte, 100000))
	small := AppendHeartbeat(nil)
	chunks := [][]byte{big}
	for range 100 {
		chunks = append(chunks, small)
	}
	r := NewReader(&chunkReader{chunks: chunks})
	r.SetMaxFrameSize(131072)
	if f, err := r.ReadFrame(); err != nil || len(f.Payload) != 100000 {
		t.Fatal(err)
	}
	if len(r.buf) < len(big) {
		t.Fatalf("buffer %d after a %d-byte frame", len(r.buf), len(big))
	}
	for range 100 {
		if _, err := r.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.buf) != minBufSize {
		t.Fatalf("buffer %d after 100 short reads, want %d", len(r.buf), minBufSize)
	}

	// A busy stream, where every read fills the buffer, doubles it up to
	// maxBufSize and no further.
	stream := bytes.Repeat(rawFrame(FrameBody, 1, make([]byte, 1000)), 1000)
	r = NewReader(bytes.NewReader(stream))
	for range 1000 {
		if _, err := r.ReadFrame(); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.buf) != maxBufSize {
		t.Fatalf("buffer %d under load, want %d", len(r.buf), maxBufSize)
	}
}

// TestReaderDeadline shows the connection's use: a read deadline interrupts
// ReadFrame mid-frame, and the next call picks the frame up where it was.
func TestReaderDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	frame := rawFrame(FrameMethod, 1, methodPayload(60, 80, u64(3), u8(0)))
	r := NewReader(a)

	// The second part goes after the first has been taken: a pipe write
	// waits for a reader, so if the deadline came first (a held-up
	// goroutine) both would wait, in either order.
	first := make(chan struct{})
	go func() {
		defer close(first)
		b.Write(frame[:5])
	}()
	a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := r.ReadFrame(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	a.SetReadDeadline(time.Time{})
	go func() {
		<-first
		b.Write(frame[5:])
	}()
	f, err := r.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	if m, err := DecodeMethod(f.Payload); err != nil || m.(*BasicAck).DeliveryTag != 3 {
		t.Fatalf("%v %v", m, err)
	}
}

func TestReaderNoProgress(t *testing.T) {
	r := NewReader(iotest.ErrReader(nil)) // always (0, nil)
	if _, err := r.ReadFrame(); err != io.ErrNoProgress {
		t.Fatal(err)
	}
}

// TestPayloadIsCapped checks that appending to a payload cannot overwrite the
// next buffered frame.
func TestPayloadIsCapped(t *testing.T) {
	raw := cat(rawFrame(FrameBody, 1, []byte("ab")), rawFrame(FrameBody, 1, []byte("cd")))
	r := NewReader(bytes.NewReader(raw))
	f, _ := r.ReadFrame()
	_ = append(f.Payload, "XXXXXXXX"...)
	if !r.FrameBuffered() {
		t.Fatal("second frame should be buffered")
	}
	if f, _ = r.ReadFrame(); string(f.Payload) != "cd" {
		t.Fatalf("second payload %q", f.Payload)
	}
	if r.FrameBuffered() {
		t.Fatal("nothing should be buffered")
	}
}

func TestAppendBodyFrames(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 1000)
	for _, tc := range []struct {
		frameMax uint32
		sizes    []int
	}{
		{4096, []int{4088, 4088, 1824}},
		{0, []int{10000}},
		{100, []int{4088, 4088, 1824}}, // raised to FrameMinSize
		{10008, []int{10000}},
		{10007, []int{9999, 1}},
	} {
		r := NewReader(bytes.NewReader(AppendBodyFrames(nil, 3, body, tc.frameMax)))
		r.SetMaxFrameSize(1 << 20)
		got, err := readStream(r)
		if err != io.EOF {
			t.Fatal(err)
		}
		var sizes []int
		var joined []byte
		for _, f := range got {
			if f.Type != FrameBody || f.Channel != 3 {
				t.Fatalf("frame %+v", f)
			}
			sizes = append(sizes, len(f.Payload))
			joined = append(joined, f.Payload...)
		}
		if !reflect.DeepEqual(sizes, tc.sizes) || !bytes.Equal(joined, body) {
			t.Fatalf("frameMax %d: sizes %v, want %v", tc.frameMax, sizes, tc.sizes)
		}
	}
	if b := AppendBodyFrames(nil, 1, nil, 4096); len(b) != 0 {
		t.Fatal("empty body must have no body frames")
	}
}

func TestAppendHeartbeat(t *testing.T) {
	if got := AppendHeartbeat([]byte{1}); !bytes.Equal(got, []byte{1, 8, 0, 0, 0, 0, 0, 0, 0xCE}) {
		t.Fatalf("% x", got)
	}
}

// TestAppendDeliverMatchesParts pins the fast path to the general encoders.
func TestAppendDeliverMatchesParts(t *testing.T) {
	body := bytes.Repeat([]byte{7}, 9000)
	props := allProps
	for _, p := range []*core.Properties{nil, &props} {
		want := AppendMethodFrame(nil, 5, &BasicDeliver{ConsumerTag: "ctag", DeliveryTag: 99, Redelivered: true, Exchange: "ex", RoutingKey: "rk"})
		want = AppendContentHeaderFrame(want, 5, ClassBasic, uint64(len(body)), p)
		want = AppendBodyFrames(want, 5, body, 4096)
		got := AppendDeliver([]byte{}, 5, "ctag", 99, true, "ex", "rk", p, body, 4096)
		if !bytes.Equal(got, want) {
			t.Fatal("AppendDeliver differs from method+header+body")
		}
	}
}

func TestContentHeaderFrame(t *testing.T) {
	b := AppendContentHeaderFrame(nil, 9, ClassBasic, 42, &core.Properties{DeliveryMode: 2})
	f, err := NewReader(bytes.NewReader(b)).ReadFrame()
	if err != nil || f.Type != FrameHeader || f.Channel != 9 {
		t.Fatalf("%+v %v", f, err)
	}
	c, n, p, err := DecodeContentHeader(f.Payload)
	if err != nil || c != ClassBasic || n != 42 || !p.Persistent() || p.Flags != core.FlagDeliveryMode {
		t.Fatalf("%d %d %+v %v", c, n, p, err)
	}
}
