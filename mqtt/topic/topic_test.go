package topic

import (
	"testing"

	"github.com/ferrymq/ferrymq/core"
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
		if got := Name(tc.key); got != tc.topic {
			t.Errorf("Name(%q) = %q, want %q", tc.key, got, tc.topic)
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

func TestMatch(t *testing.T) {
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
		if got := Match(tc.filter, tc.topic); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.filter, tc.topic, got, tc.want)
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
		if got := ValidFilter(tc.filter); got != tc.want {
			t.Errorf("ValidFilter(%q) = %v, want %v", tc.filter, got, tc.want)
		}
	}
}

func TestMessageQoS(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    uint8
		headers core.Table
		want    byte
	}{
		{"transient", 1, nil, 0},
		{"persistent", 2, nil, 1},
		{"header 2", 2, core.Table{QoSHeader: int8(2)}, 2},
		{"header 0 on persistent", 2, core.Table{QoSHeader: int32(0)}, 0},
		{"header out of range", 1, core.Table{QoSHeader: int8(3)}, 0},
		{"header not a number", 2, core.Table{QoSHeader: "2"}, 1},
	} {
		m := &core.Message{}
		m.Properties.DeliveryMode, m.Properties.Headers = tc.mode, tc.headers
		if got := MessageQoS(m); got != tc.want {
			t.Errorf("%s: MessageQoS = %d, want %d", tc.name, got, tc.want)
		}
	}
}
