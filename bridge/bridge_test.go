package bridge

import (
	"strings"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

func TestLinkValidate(t *testing.T) {
	one := byte(1)
	three := byte(3)
	for _, tc := range []struct {
		name    string
		link    Link
		wantErr string
		check   func(t *testing.T, l *link)
	}{
		{name: "defaults", link: Link{Name: "up", URL: "mqtt://h:1883"}, check: func(t *testing.T, l *link) {
			if l.proto != protoMQTT5 || l.Direction != "out" || len(l.out) != 1 || len(l.in) != 0 ||
				l.Exchange != "amq.topic" || l.Overflow != "block" || l.Window != DefaultWindow ||
				l.MaxMessages != DefaultMaxMessages || l.ClientID != "ferrymq-n1-up" {
				t.Fatalf("defaults not applied: %+v", l)
			}
		}},
		{name: "both splits rules", link: Link{Name: "x", URL: "amqps://h", Direction: "both",
			Topics: []Topic{{Pattern: "a/#"}, {Pattern: "b/#", Direction: "in", QoS: &one}}},
			check: func(t *testing.T, l *link) {
				if !l.secure || l.proto != protoAMQP || len(l.out) != 1 || len(l.in) != 2 {
					t.Fatalf("out %d in %d secure %v", len(l.out), len(l.in), l.secure)
				}
			}},
		{name: "mqtt3", link: Link{Name: "x", URL: "mqtt3s://h"}, check: func(t *testing.T, l *link) {
			if l.proto != protoMQTT3 || !l.secure {
				t.Fatalf("proto %v secure %v", l.proto, l.secure)
			}
		}},
		{name: "no name", link: Link{URL: "mqtt://h"}, wantErr: "no name"},
		{name: "bad scheme", link: Link{Name: "x", URL: "http://h"}, wantErr: "scheme"},
		{name: "no host", link: Link{Name: "x", URL: "mqtt://"}, wantErr: "url"},
		{name: "bad direction", link: Link{Name: "x", URL: "mqtt://h", Direction: "sideways"}, wantErr: "direction"},
		{name: "bad qos", link: Link{Name: "x", URL: "mqtt://h", Topics: []Topic{{Pattern: "#", QoS: &three}}}, wantErr: "qos 3"},
		{name: "empty pattern", link: Link{Name: "x", URL: "mqtt://h", Topics: []Topic{{}}}, wantErr: "pattern is empty"},
		{name: "bad overflow", link: Link{Name: "x", URL: "mqtt://h", Overflow: "explode"}, wantErr: "overflow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := tc.link.validate("n1")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, l)
		})
	}
}

func TestTopicRules(t *testing.T) {
	rules := []Topic{
		{Pattern: "sensors/#", LocalPrefix: "site/", RemotePrefix: "edge1/"},
		{Pattern: "#"},
	}
	for _, tc := range []struct{ local, remote string }{
		{"site/sensors/7", "edge1/sensors/7"},
		{"other/x", "other/x"},
	} {
		got, _, ok := remoteTopic(rules, tc.local)
		if !ok || got != tc.remote {
			t.Errorf("remoteTopic(%q) = %q %v, want %q", tc.local, got, ok, tc.remote)
		}
		if back := localTopic(rules, tc.remote); back != tc.local {
			t.Errorf("localTopic(%q) = %q, want %q", tc.remote, back, tc.local)
		}
	}
	if _, _, ok := remoteTopic(rules[:1], "nowhere/x"); ok {
		t.Error("a topic no rule matches was forwarded")
	}
}

func TestVia(t *testing.T) {
	m := &core.Message{}
	if via(m, "a") {
		t.Fatal("empty via matched")
	}
	m.Properties.Headers = withVia(nil, "a")
	m.Properties.Headers = withVia(m.Properties.Headers, "bb")
	if got := m.Properties.Headers[ViaHeader]; got != "a,bb" {
		t.Fatalf("via = %v, want a,bb", got)
	}
	for node, want := range map[string]bool{"a": true, "bb": true, "b": false, "c": false} {
		if via(m, node) != want {
			t.Errorf("via(%q) = %v, want %v", node, !want, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	top := func(n int64) int64 { return n - 1 }
	prev := time.Duration(0)
	for n := range 20 {
		d := backoff(n, top)
		if d < prev && d < 30*time.Second {
			t.Fatalf("backoff(%d) = %v shrank from %v", n, d, prev)
		}
		if d > 31*time.Second {
			t.Fatalf("backoff(%d) = %v over the 30 s cap", n, d)
		}
		prev = d
	}
	if d := backoff(0, func(int64) int64 { return 0 }); d <= 0 {
		t.Fatalf("backoff with zero jitter = %v, want > 0", d)
	}
}
