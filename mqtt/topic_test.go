package mqtt

import (
	"fmt"
	"testing"
)

func TestTopicMapping(t *testing.T) {
	for _, tc := range []struct{ topic, key string }{
		{"a/b/c", "a.b.c"},
		{"a/b.c", "a.b/c"},
		{"sensors/7/temp.c", "sensors.7.temp/c"},
		{"/leading", ".leading"},
		{"plain", "plain"},
	} {
		if got := RoutingKey(tc.topic); got != tc.key {
			t.Errorf("RoutingKey(%q) = %q, want %q", tc.topic, got, tc.key)
		}
		if got := TopicName(tc.key); got != tc.topic {
			t.Errorf("TopicName(%q) = %q, want %q", tc.key, got, tc.topic)
		}
	}
	for _, tc := range []struct{ filter, key string }{
		{"a/+/c", "a.*.c"},
		{"a/#", "a.#"},
		{"#", "#"},
		{"a.b/+", "a/b.*"},
	} {
		if got := BindingKey(tc.filter); got != tc.key {
			t.Errorf("BindingKey(%q) = %q, want %q", tc.filter, got, tc.key)
		}
	}
}

func TestMatchFilter(t *testing.T) {
	for _, tc := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/+", "a", false},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"#", "a/b", true},
		{"+/+", "a/b", true},
		{"+", "$SYS", false},
		{"#", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/b", "a/c", false},
		{"a", "a/b", false},
	} {
		if got := MatchFilter(tc.filter, tc.topic); got != tc.want {
			t.Errorf("MatchFilter(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
		}
	}
}

func TestValidFilter(t *testing.T) {
	for _, tc := range []struct {
		filter string
		want   bool
	}{
		{"a/b", true}, {"a/+/c", true}, {"a/#", true}, {"#", true},
		{"", false}, {"a/#/c", false}, {"a#", false}, {"a/b+", false},
		{"$share/g/a/+", true}, {"$share/g", false}, {"$share//a", false}, {"$share/g+/a", false},
	} {
		if got := validFilter(tc.filter); got != tc.want {
			t.Errorf("validFilter(%q) = %v, want %v", tc.filter, got, tc.want)
		}
	}
}

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
