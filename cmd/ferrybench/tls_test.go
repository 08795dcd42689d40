package main

import (
	"strings"
	"testing"
)

func TestParseMQTTURLSchemes(t *testing.T) {
	tests := []struct {
		url, addr string
		secure    bool
		bad       bool
	}{
		{"tcp://127.0.0.1", "127.0.0.1:1883", false, false},
		{"mqtt://h:1884", "h:1884", false, false},
		{"ssl://127.0.0.1", "127.0.0.1:8883", true, false},
		{"mqtts://h:9000", "h:9000", true, false},
		{"ws://h:8083", "", false, true},
	}
	for _, tt := range tests {
		got, err := parseMQTTURL(tt.url)
		if (err != nil) != tt.bad {
			t.Fatalf("%s: err %v", tt.url, err)
		}
		if !tt.bad && (got.addr != tt.addr || got.secure != tt.secure) {
			t.Errorf("%s: %+v, want addr %s secure %v", tt.url, got, tt.addr, tt.secure)
		}
	}
}

func TestWriteTLSRatios(t *testing.T) {
	var b strings.Builder
	writeTLSRatios(&b, []result{
		{Scenario: "amqp-1to1", Size: 16, MsgPerSec: 200, OK: true},
		{Scenario: "amqp-1to1-tls", Size: 16, MsgPerSec: 150, OK: true},
		{Scenario: "mqtt-qos1-1to1-tls", Size: 16, MsgPerSec: 10, OK: true}, // no plaintext run
		{Scenario: "idle-mqtt-conns", OK: true, MsgPerSec: 1000},
		{Scenario: "idle-mqtt-conns-tls", OK: true, MsgPerSec: 500},
	})
	out := b.String()
	if !strings.Contains(out, "| amqp-1to1 | 16 |") || !strings.Contains(out, "| 0.75 |") {
		t.Errorf("no amqp-1to1 ratio of 0.75:\n%s", out)
	}
	if strings.Contains(out, "mqtt-qos1") || strings.Contains(out, "idle") {
		t.Errorf("a ratio without its plaintext run, or for idle connections:\n%s", out)
	}
}
