package mqtt

import (
	"fmt"
	"testing"
)

// TestNextPacket: packets are cut out of the input whatever the split of
// the stream; a fifth remaining-length byte is malformed, and a packet
// over the maximum size is refused before it arrives.
func TestNextPacket(t *testing.T) {
	good := []byte{
		0x30, 0x03, 0, 1, 'a', // PUBLISH, 3 bytes
		0xC0, 0x00, // PINGREQ
		0x30, 0x80, 0x01, // PUBLISH, 128 bytes follow
	}
	good = append(good, make([]byte, 128)...)
	newClient := func(max uint32) *client {
		c := &client{srv: &Server{cfg: Config{MaxPacketSize: max}}}
		b := make([]byte, readBufSize)
		c.rd.buf, c.rd.in = &b, b[:0]
		return c
	}
	for split := 0; split <= len(good); split++ {
		c := newClient(1 << 20)
		var lengths []int
		for _, part := range [][]byte{good[:split], good[split:]} {
			c.rd.in = append(c.rd.in, part...)
			for {
				_, body, n, err := c.nextPacket()
				if err != nil {
					t.Fatalf("split %d: %v", split, err)
				}
				if n == 0 {
					break
				}
				lengths = append(lengths, len(body))
				c.rd.in = c.rd.in[n:]
			}
		}
		if fmt.Sprint(lengths) != "[3 0 128]" || len(c.rd.in) != 0 {
			t.Fatalf("split %d: packets of %v, %d bytes left", split, lengths, len(c.rd.in))
		}
	}
	for _, tc := range []struct {
		name string
		in   []byte
		max  uint32
	}{
		{"five length bytes", []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x00}, 1 << 20},
		{"too large", []byte{0x30, 0x80, 0x01}, 100},
	} {
		c := newClient(tc.max)
		c.rd.in = append(c.rd.in, tc.in...)
		if _, _, _, err := c.nextPacket(); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}
