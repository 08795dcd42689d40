package mqtt

import "testing"

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

// TestFramer: packet boundaries are followed across any split of the
// stream, and a fifth remaining-length byte is malformed.
func TestFramer(t *testing.T) {
	good := []byte{
		0x30, 0x03, 'a', 'b', 'c', // PUBLISH, 3 bytes
		0xC0, 0x00, // PINGREQ
		0x30, 0x80, 0x01, // PUBLISH, 128 bytes follow
	}
	good = append(good, make([]byte, 128)...)
	for split := 0; split <= len(good); split++ {
		var f framer
		if err := f.scan(good[:split]); err != nil {
			t.Fatalf("split %d: %v", split, err)
		}
		if err := f.scan(good[split:]); err != nil {
			t.Fatalf("split %d: %v", split, err)
		}
		if f.inLength || f.remaining != 0 {
			t.Fatalf("split %d: not at a packet boundary at the end", split)
		}
	}
	var f framer
	if err := f.scan([]byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x00}); err == nil {
		t.Fatal("five-byte remaining length accepted")
	}
}
