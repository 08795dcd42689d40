package wire

import (
	"bytes"
	"testing"

	"github.com/ferrymq/ferrymq/core"
)

// benchProps are typical publisher properties: a content type, persistent
// delivery and a small headers table.
var benchProps = core.Properties{
	ContentType:  "application/json",
	DeliveryMode: 2,
	Headers:      core.Table{"x-origin": "sensor-7", "seq": int64(42)},
}

// BenchmarkAppendDeliver is the delivery hot path: basic.deliver, content
// header and one body frame into a reused buffer.
func BenchmarkAppendDeliver(b *testing.B) {
	for _, size := range []int{16, 1024} {
		b.Run(itoa(size), func(b *testing.B) {
			body := make([]byte, size)
			buf := make([]byte, 0, 4096)
			b.ReportAllocs()
			b.SetBytes(int64(size))
			for i := 0; i < b.N; i++ {
				buf = AppendDeliver(buf[:0], 1, "amq.ctag-benchmark", uint64(i), false, "amq.topic", "sensors.7.temp", &benchProps, body, 131072)
			}
		})
	}
}

// BenchmarkReadPublish is the publish hot path on the read side: three
// frames (method, header, body) parsed from a buffered stream, with the
// method and content header decoded.
func BenchmarkReadPublish(b *testing.B) {
	var one []byte
	one = AppendMethodFrame(one, 1, &BasicPublish{Exchange: "amq.topic", RoutingKey: "sensors.7.temp"})
	one = AppendContentHeaderFrame(one, 1, ClassBasic, 16, &benchProps)
	one = AppendBodyFrames(one, 1, make([]byte, 16), 131072)
	stream := bytes.Repeat(one, 1000)
	rd := bytes.NewReader(stream)
	r := NewReader(rd)
	r.SetMaxFrameSize(131072)
	var m BasicPublish
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if i%1000 == 0 {
			rd.Reset(stream)
		}
		f, err := r.ReadFrame()
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Decode(f.Payload[4:]); err != nil {
			b.Fatal(err)
		}
		f, _ = r.ReadFrame()
		if _, _, _, err := DecodeContentHeader(f.Payload); err != nil {
			b.Fatal(err)
		}
		if _, err := r.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}
