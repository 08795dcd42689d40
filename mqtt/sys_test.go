package mqtt

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// sysUsers: guest as usual, and "nosys", whose topic permissions cover
// sensors/... only.
func sysUsers(t *testing.T) *core.Auth {
	t.Helper()
	users := core.DefaultUsers()
	for _, err := range []error{
		users.Put(core.UserSpec{Name: "nosys", PasswordHash: core.HashPassword("pw")}),
		users.SetPermissions("nosys", "/", core.FullPermissions),
		users.SetTopicPermissions("nosys", "/", core.TopicPermissions{Exchange: "amq.topic", Write: ".*", Read: `^sensors\.`}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return core.NewAuth(users)
}

// waitSys reads c's messages until want has seen every topic it names
// with a payload it accepts, failing after mqtttest.Wait. It returns the
// last payload of each topic seen.
func waitSys(t *testing.T, c *mqtttest.V5Client, want map[string]func(string) bool, already ...*paho.Publish) map[string]*paho.Publish {
	t.Helper()
	seen := map[string]*paho.Publish{}
	ok := map[string]bool{}
	deadline := time.After(mqtttest.Wait)
	for len(ok) < len(want) {
		var m *paho.Publish
		if len(already) > 0 {
			m, already = already[0], already[1:]
		} else {
			select {
			case m = <-c.Msgs:
			case <-deadline:
				t.Fatalf("$SYS topics not all seen as wanted within %v; seen %v", mqtttest.Wait, sysPayloads(seen))
			}
		}
		if !strings.HasPrefix(m.Topic, "$SYS/") {
			t.Fatalf("$SYS subscriber got %s=%q", m.Topic, m.Payload)
		}
		seen[m.Topic] = m
		if f := want[m.Topic]; f != nil && f(string(m.Payload)) {
			ok[m.Topic] = true
		}
	}
	return seen
}

func sysPayloads(seen map[string]*paho.Publish) map[string]string {
	out := make(map[string]string, len(seen))
	for k, m := range seen {
		out[k] = string(m.Payload)
	}
	return out
}

func atLeast(n uint64) func(string) bool {
	return func(s string) bool {
		v, err := strconv.ParseUint(s, 10, 64)
		return err == nil && v >= n
	}
}

func anyValue(string) bool { return true }

// TestSysTopics: with a short sys_interval, a subscriber to $SYS/# gets
// Mosquitto's $SYS/broker/... topics, the latest values at once (retained)
// and then as they change; the counts follow what clients do; a "#"
// subscriber never sees them [MQTT-4.7.2-1]; and a user whose topic
// permissions do not cover $SYS is refused the subscription (SUBACK 0x87)
// and gets nothing.
func TestSysTopics(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{MQTT: Config{SysInterval: 100 * time.Millisecond, Version: "9.9.9-test", Auth: sysUsers(t)}})

	sub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "sys-watcher"})
	sub.SubscribeAt(t, 0, "$SYS/#")
	first := sub.Next(t, "first $SYS message")
	seen := waitSys(t, sub, map[string]func(string) bool{
		"$SYS/broker/version":                     func(s string) bool { return s == "ferrymq version 9.9.9-test" },
		"$SYS/broker/uptime":                      func(s string) bool { return strings.HasSuffix(s, " seconds") },
		"$SYS/broker/clients/connected":           atLeast(1),
		"$SYS/broker/clients/total":               atLeast(1),
		"$SYS/broker/subscriptions/count":         atLeast(1),
		"$SYS/broker/messages/received":           atLeast(2), // CONNECT, SUBSCRIBE
		"$SYS/broker/bytes/received":              atLeast(1),
		"$SYS/broker/heap/current":                atLeast(1),
		"$SYS/broker/load/messages/received/1min": anyValue,
		"$SYS/broker/load/bytes/sent/15min":       anyValue,
	}, first)
	// The version never changes: published once, before this subscription,
	// it came as the retained value.
	if !seen["$SYS/broker/version"].Retain {
		t.Error("$SYS/broker/version came without RETAIN; the latest values are retained")
	}

	all := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "everything"})
	all.SubscribeAt(t, 0, "#")
	nosys := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "nosys", Username: "nosys", Password: "pw"})
	// paho reports a refused filter as an error beside the SUBACK.
	sa, err := nosys.Subscribe(mqtttest.Ctx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "$SYS/#"}, {Topic: "sensors/#"}}})
	if sa == nil {
		t.Fatalf("nosys subscribe: %v", err)
	}
	if len(sa.Reasons) != 2 || sa.Reasons[0] != 0x87 || sa.Reasons[1] != 0 {
		t.Fatalf("nosys SUBACK reasons %v, want [0x87 0]: $SYS refused, sensors/# granted", sa.Reasons)
	}

	// Three publishes: the counts reach them, and the watcher sees it.
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "publisher"})
	for i := range 3 {
		pub.Send(t, "sensors/1", 1, "reading "+strconv.Itoa(i))
	}
	waitSys(t, sub, map[string]func(string) bool{
		"$SYS/broker/publish/messages/received": atLeast(3),
		"$SYS/broker/publish/messages/sent":     atLeast(3), // to "everything" and nosys
		"$SYS/broker/clients/connected":         atLeast(4),
		"$SYS/broker/clients/maximum":           atLeast(4),
	})

	// Several intervals later, the "#" subscriber and nosys have had the
	// readings and the sentinel, and no $SYS message.
	waitSys(t, sub, map[string]func(string) bool{"$SYS/broker/uptime": anyValue})
	waitSys(t, sub, map[string]func(string) bool{"$SYS/broker/uptime": anyValue})
	pub.Send(t, "sensors/1", 1, "sentinel")
	for _, c := range []*mqtttest.V5Client{all, nosys} {
		for _, m := range c.Until(t, "sentinel") {
			if strings.HasPrefix(m.Topic, "$") {
				t.Errorf("a client that may not read $SYS, or subscribed to #, got %s=%q", m.Topic, m.Payload)
			}
		}
	}
}

// TestSysOff: with SysInterval 0 nothing is published, and a $SYS
// subscription is granted but stays silent.
func TestSysOff(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	sub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "sys-watcher"})
	sub.SubscribeAt(t, 0, "$SYS/#", "done")
	sub.Send(t, "done", 0, "sentinel")
	if got := sub.Until(t, "sentinel"); len(got) != 0 {
		t.Fatalf("with $SYS off, got %s", mqtttest.V5Topics(got))
	}
}
