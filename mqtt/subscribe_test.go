package mqtt

// Subscriptions: Subscription Identifiers, No Local, UNSUBSCRIBE and
// shared subscriptions (MQTT 5 section 3.8, 3.10 and 4.8.2).

import (
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// subRef is a subscription a message matches: its identifier (0: none)
// and its QoS.
type subRef struct {
	id  int
	qos byte
}

// checkSubIDs checks the copies of one message that matched the
// overlapping subscriptions subs. The server may send one copy or one per
// subscription [MQTT-3.3.4-3]: one copy carries the identifiers of all of
// them [MQTT-3.3.4-4] at the highest of their QoS [MQTT-3.3.4-2]; one copy
// per subscription carries that subscription's identifier
// [MQTT-3.3.4-5] at its QoS [MQTT-3.8.4-8].
func checkSubIDs(t *testing.T, what string, pubQoS byte, subs []subRef, copies []rawPublish) {
	t.Helper()
	key := func(ids []int, qos byte) string {
		ids = slices.Clone(ids)
		sort.Ints(ids)
		return fmt.Sprintf("ids %v QoS %d", ids, qos)
	}
	var got []string
	for _, c := range copies {
		got = append(got, key(c.Props.all(propSubID), c.QoS))
	}
	sort.Strings(got)
	var one []int
	var top byte
	per := make([]string, 0, len(subs))
	for _, s := range subs {
		var ids []int
		if s.id > 0 {
			one = append(one, s.id)
			ids = []int{s.id}
		}
		top = max(top, s.qos)
		per = append(per, key(ids, min(pubQoS, s.qos)))
	}
	sort.Strings(per)
	switch len(copies) {
	case 1:
		if want := key(one, min(pubQoS, top)); got[0] != want {
			t.Errorf("%s: one copy with %s, want %s [MQTT-3.3.4-2, -4]", what, got[0], want)
		}
	case len(subs):
		if !slices.Equal(got, per) {
			t.Errorf("%s: copies %q, want %q, one per subscription [MQTT-3.3.4-5]", what, got, per)
		}
	default:
		t.Errorf("%s: %d copies (%q) for %d matching subscriptions", what, len(copies), got, len(subs))
	}
	t.Logf("%s: %q", what, got)
}

// TestSubscriptionIdentifiers: overlapping subscriptions made with
// Subscription Identifiers 7 and 9, of the same QoS and of different QoS,
// and with one of them without an identifier. A message matching both
// comes once or twice, as [MQTT-3.3.4-3/-4/-5] allow, with the right
// identifiers; one matching a single subscription carries only its
// identifier; a re-subscription replaces the identifier [MQTT-3.8.4-3].
func TestSubscriptionIdentifiers(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "sid-pub"})
	cases := []struct {
		name string
		a, b subRef // "<name>/a/+" and "<name>/+/x"; both match <name>/a/x
	}{
		{"sid-same-qos", subRef{7, 1}, subRef{9, 1}},
		{"sid-mixed-qos", subRef{7, 1}, subRef{9, 0}},
		{"sid-one-without", subRef{7, 1}, subRef{0, 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: tc.name, AutoAck: true})
			if v, ok := c.Props.get(propSubIDAvailable); ok && v == 0 {
				t.Fatal("CONNACK says Subscription Identifiers are not available")
			}
			// One SUBSCRIBE each: the identifier is per SUBSCRIBE packet.
			c.subscribe(t, tc.a.id, rawSub{tc.name + "/a/+", tc.a.qos})
			c.subscribe(t, tc.b.id, rawSub{tc.name + "/+/x", tc.b.qos})
			pub.Send(t, tc.name+"/a/x", 1, "both")
			pub.Send(t, tc.name+"/a/y", 1, "a only")
			pub.Send(t, tc.name+"/c/x", 1, "b only")
			// A sentinel for each subscription, which may be delivered
			// on paths of their own.
			pub.Send(t, tc.name+"/a/s", 1, "sentinel a")
			pub.Send(t, tc.name+"/s/x", 1, "sentinel b")
			got, sentinels := c.until(t, "sentinel a", "sentinel b")
			by := map[string][]rawPublish{}
			for _, m := range got {
				by[m.Payload] = append(by[m.Payload], m)
			}
			for p := range by {
				if !slices.Contains([]string{"both", "a only", "b only"}, p) {
					t.Errorf("unexpected message %q", p)
				}
			}
			checkSubIDs(t, "message matching both", 1, []subRef{tc.a, tc.b}, by["both"])
			checkSubIDs(t, "message matching a", 1, []subRef{tc.a}, by["a only"])
			checkSubIDs(t, "message matching b", 1, []subRef{tc.b}, by["b only"])
			checkSubIDs(t, "sentinel matching a", 1, []subRef{tc.a}, []rawPublish{sentinels["sentinel a"]})
			checkSubIDs(t, "sentinel matching b", 1, []subRef{tc.b}, []rawPublish{sentinels["sentinel b"]})
		})
	}

	t.Run("resubscribe-replaces-the-identifier", func(t *testing.T) {
		c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "sid-replace", AutoAck: true})
		for i, id := range []int{7, 11, 0} {
			c.subscribe(t, id, rawSub{"sid-replace/t", 1})
			pub.Send(t, "sid-replace/t", 1, fmt.Sprint(i))
			m := c.nextPub(t, fmt.Sprintf("message after subscribing with identifier %d", id))
			var want []int
			if id > 0 {
				want = []int{id}
			}
			if got := m.Props.all(propSubID); m.Payload != fmt.Sprint(i) || !slices.Equal(got, want) {
				t.Errorf("after subscribing with identifier %d: got %q with identifiers %v, want %q with %v [MQTT-3.8.4-3]", id, m.Payload, got, fmt.Sprint(i), want)
			}
		}
	})
}

// TestNoLocal: with No Local, "Application Messages MUST NOT be
// forwarded to a connection with a ClientID equal to the ClientID of the
// publishing connection" [MQTT-3.8.3-3], while messages of other clients
// (MQTT or AMQP) still come, and a client without the option gets its
// own.
func TestNoLocal(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	amqpPub := mqtttest.NewAMQPPublisher(t, b.URL)
	other := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "nl-other"})

	t.Run("own-publishes-held-back", func(t *testing.T) {
		a := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "nl-a"})
		subscribeV5(t, a, nil, paho.SubscribeOptions{Topic: "nl/t", QoS: 1, NoLocal: true})
		plain := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "nl-plain"})
		subscribeV5(t, plain, nil, paho.SubscribeOptions{Topic: "nl/t", QoS: 1})
		plain.Send(t, "nl/t", 1, "plain's own")
		a.Send(t, "nl/t", 1, "a's own")
		other.Send(t, "nl/t", 1, "other's")
		amqpPub.Send(t, "nl.t", true, "from amqp")
		other.Send(t, "nl/t", 1, "sentinel")
		if got, want := v5Payloads(a.Until(t, "sentinel")), []string{"plain's own", "other's", "from amqp"}; !slices.Equal(got, want) {
			t.Errorf("No Local subscriber got %q, want %q [MQTT-3.8.3-3]", got, want)
		}
		if got, want := v5Payloads(plain.Until(t, "sentinel")), []string{"plain's own", "a's own", "other's", "from amqp"}; !slices.Equal(got, want) {
			t.Errorf("subscriber without No Local got %q, want %q", got, want)
		}
	})

	t.Run("overlapping-subscription-without-it", func(t *testing.T) {
		// The option is per subscription: a second matching subscription
		// without No Local still forwards the client's own message, once.
		a := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "nl-overlap"})
		subscribeV5(t, a, nil, paho.SubscribeOptions{Topic: "nl2/t", QoS: 1, NoLocal: true})
		subscribeV5(t, a, nil, paho.SubscribeOptions{Topic: "nl2/#", QoS: 1})
		a.Send(t, "nl2/t", 1, "own")
		other.Send(t, "nl2/t", 1, "sentinel")
		if got := v5Payloads(a.Until(t, "sentinel")); !slices.Equal(got, []string{"own"}) {
			t.Errorf("got %q, want [\"own\"] once, through the subscription without No Local", got)
		}
	})

	t.Run("own-message-queued-across-reconnect", func(t *testing.T) {
		// The rule is about ClientIDs, not connections: the client's own
		// message, held back in its session queue by flow control when the
		// connection drops, must not reach it on the next connection.
		const id = "nl-resume"
		qw := newQueueWatch(t, b)
		a := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: id, SessionExpiry: 300, ReceiveMaximum: 1})
		a.subscribe(t, 0, rawSub{"nl3/t", 1 | optNoLocal})
		other.Send(t, "nl3/t", 1, "first")
		first := a.nextPub(t, "first") // not acknowledged: the Receive Maximum of 1 is used up
		if first.Payload != "first" {
			t.Fatalf("got %q, want \"first\"", first.Payload)
		}
		a.publish(t, "nl3/t", 1, "own", nil)
		a.await(t, typPuback, -1, "PUBACK of the client's own publish")
		t.Logf("%s holds %d ready messages while the connection drops", sessionQueue(id), qw.ready(t, sessionQueue(id)))
		a.conn.Close()
		<-a.done
		a2 := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: id, Resume: true, SessionExpiry: 300, AutoAck: true})
		if !a2.SessionPresent {
			t.Fatalf("CONNACK session present 0 on resuming, want 1 [MQTT-3.2.2-3]")
		}
		other.Send(t, "nl3/t", 1, "sentinel")
		got, _ := a2.until(t, "sentinel")
		if ps := payloads(got); !slices.Equal(ps, []string{"first"}) {
			t.Errorf("resumed No Local subscriber got %q, want [\"first\"] (resent [MQTT-4.4.0-1]) and not its own message [MQTT-3.8.3-3]", ps)
		}
	})
}

func v5Payloads(ms []*paho.Publish) []string {
	var out []string
	for _, m := range ms {
		out = append(out, string(m.Payload))
	}
	return out
}

// TestUnsubscribe: the UNSUBACK has a reason code per filter, in
// order [MQTT-3.11.3-1]: 0x00 for a subscription deleted, 0x11 where none
// existed; filters are compared character by character, wildcards
// included [MQTT-3.10.4-1]. After it, no new messages of the filter come
// [MQTT-3.10.4-2], while the other subscriptions go on.
func TestUnsubscribe(t *testing.T) {
	b := startTestBroker(t, testBrokerOpts{})
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "us-pub"})

	t.Run("mqtt5", func(t *testing.T) {
		c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "us-mqtt5"})
		c.SubscribeAt(t, 1, "us5/a", "us5/b/+", "us5/keep", "$share/usg/us5/s")
		ua, err := c.Unsubscribe(mqtttest.Ctx(t), &paho.Unsubscribe{Topics: []string{"us5/a", "us5/none", "us5/b/+", "us5/b/x", "$share/usg/us5/s"}})
		if err != nil {
			t.Fatalf("unsubscribe: %v", err)
		}
		if want := []byte{0x00, 0x11, 0x00, 0x11, 0x00}; !slices.Equal(ua.Reasons, want) {
			t.Errorf("UNSUBACK reasons % x, want % x [MQTT-3.11.3-1, -2]", ua.Reasons, want)
		}
		ua, err = c.Unsubscribe(mqtttest.Ctx(t), &paho.Unsubscribe{Topics: []string{"us5/a"}})
		if err != nil {
			t.Fatalf("second unsubscribe: %v", err)
		}
		if !slices.Equal(ua.Reasons, []byte{0x11}) {
			t.Errorf("unsubscribing again: reasons % x, want 11", ua.Reasons)
		}
		for _, topic := range []string{"us5/a", "us5/b/x", "us5/s"} {
			pub.Send(t, topic, 1, "to "+topic)
		}
		pub.Send(t, "us5/keep", 1, "sentinel")
		if got := c.Until(t, "sentinel"); len(got) > 0 {
			t.Errorf("after unsubscribing got %s [MQTT-3.10.4-2]", mqtttest.V5Topics(got))
		}
	})

	t.Run("mqtt311", func(t *testing.T) {
		c := mqtttest.ConnectV3(t, b.MQTTAddr, mqtttest.V3Options{ClientID: "us-mqtt311"})
		c.SubscribeAt(t, 1, "us3/a", "us3/keep")
		mqtttest.WaitToken(t, c.Unsubscribe("us3/a", "us3/none"), "unsubscribe") // an UNSUBACK even where nothing was deleted (3.1.1 [MQTT-3.10.4-5])
		pub.Send(t, "us3/a", 1, "to us3/a")
		pub.Send(t, "us3/keep", 1, "sentinel")
		if got := mqtttest.UntilMsg(t, c, "sentinel"); len(got) > 0 {
			t.Errorf("after unsubscribing got %v (3.1.1 [MQTT-3.10.4-2])", got)
		}
	})
}

// TestSharedSubscriptions: members of $share/<group>/<filter> compete
// for messages, each message going to one member (section 4.8.2), while an
// ordinary subscription of the same filter gets every one. Messages come
// from MQTT and from AMQP.
func TestSharedSubscriptions(t *testing.T) {
	const n = 300 // half from MQTT, half from AMQP
	b := startTestBroker(t, testBrokerOpts{})
	var members []*mqtttest.V5Client
	for i := range 3 {
		c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: fmt.Sprintf("share-member-%d", i), Buffer: n + 10})
		c.SubscribeAt(t, 1, "$share/grp/shared/#")
		members = append(members, c)
	}
	plain := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "share-plain", Buffer: n + 10})
	plain.SubscribeAt(t, 1, "shared/#")

	mpub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "share-pub"})
	apub := mqtttest.NewAMQPPublisher(t, b.URL)
	for i := range n {
		if i%2 == 0 {
			mpub.Send(t, "shared/t", 1, fmt.Sprint(i))
		} else {
			apub.Send(t, "shared.t", true, fmt.Sprint(i))
		}
	}

	seen := make(map[string]int, n) // payload -> member
	perMember := make([]int, len(members))
	deadline := time.NewTimer(3 * mqtttest.Wait)
	defer deadline.Stop()
	for len(seen) < n {
		var m *paho.Publish
		var from int
		select {
		case m = <-members[0].Msgs:
		case m = <-members[1].Msgs:
			from = 1
		case m = <-members[2].Msgs:
			from = 2
		case <-deadline.C:
			t.Fatalf("the group received %d of %d messages (per member %v)", len(seen), n, perMember)
		}
		if prev, dup := seen[string(m.Payload)]; dup {
			t.Fatalf("message %q delivered to members %d and %d of one group", m.Payload, prev, from)
		}
		seen[string(m.Payload)] = from
		perMember[from]++
	}
	t.Logf("messages per group member: %v", perMember)
	// Spec-wise any member may get any message; ferrymq's group is one
	// queue with competing consumers, which spreads them.
	for i, k := range perMember {
		if k == 0 {
			t.Errorf("member %d received nothing: competing consumers should share the group's queue (per member %v)", i, perMember)
		}
	}
	got := make(map[string]bool, n)
	for len(got) < n {
		m := plain.Next(t, fmt.Sprintf("message %d of %d at the ordinary subscriber", len(got)+1, n))
		if got[string(m.Payload)] {
			t.Fatalf("ordinary subscriber got %q twice", m.Payload)
		}
		got[string(m.Payload)] = true
	}
}
