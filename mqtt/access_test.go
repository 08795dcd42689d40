package mqtt

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/core"
)

// addUser adds a user with password pw and every permission on "/".
func addUser(t testing.TB, users *core.Users, name, pw string, tags ...string) {
	t.Helper()
	if err := users.Put(core.UserSpec{Name: name, PasswordHash: core.HashPassword(pw), Tags: tags}); err != nil {
		t.Fatal(err)
	}
	if err := users.SetPermissions(name, "/", core.FullPermissions); err != nil {
		t.Fatal(err)
	}
}

// accessBroker is a broker with the IoT users of the README's example:
//
//	dev:    its session queues, write amq.topic, read amq.topic; topic
//	        write ^devices\.{client_id}\. and read ^commands\.{client_id}\.
//	noread: as dev, but no read on amq.topic
//	nobody: no permissions at all
//	other:  every permission, no tags
func accessBroker(t *testing.T, delay time.Duration) (*testBroker, *core.Users) {
	t.Helper()
	users := core.DefaultUsers()
	put := func(name string, p *core.VHostPermissions) {
		must(t, users.Put(core.UserSpec{Name: name, PasswordHash: core.HashPassword(name + "-pw")}))
		if p != nil {
			must(t, users.SetPermissions(name, "/", *p))
		}
	}
	put("dev", &core.VHostPermissions{Configure: `^mqtt-subscription-`, Write: `^(amq\.topic|mqtt-subscription-)`, Read: `^(amq\.topic|mqtt-subscription-)`})
	must(t, users.SetTopicPermissions("dev", "/", core.TopicPermissions{Exchange: "amq.topic", Write: `^devices\.{client_id}\.`, Read: `^commands\.{client_id}\.`}))
	put("noread", &core.VHostPermissions{Configure: `.*`, Write: `.*`, Read: `^mqtt-subscription-`})
	put("nobody", nil)
	put("other", &core.FullPermissions)
	b := startTestBroker(t, testBrokerOpts{MQTT: Config{Auth: core.NewAuth(users), LoginFailureDelay: delay}})
	return b, users
}

func versionName(v byte) string {
	if v == 5 {
		return "v5"
	}
	return "v3.1.1"
}

// TestMQTTPermissionMatrix: each MQTT operation allowed and refused, with
// the exact reason code of each protocol version.
func TestMQTTPermissionMatrix(t *testing.T) {
	b, _ := accessBroker(t, time.Millisecond)
	as := func(user, id string) rawOpts { return rawOpts{ClientID: id, Username: user, Password: user + "-pw"} }
	type outcome struct{ v5, v3 int }
	tests := []struct {
		name string
		opts rawOpts
		// op runs after a successful CONNECT and returns the reason code
		// it got: SUBACK or PUBACK code, DISCONNECT reason, or -1 when
		// the server closed the connection without one.
		op   func(t *testing.T, c *rawClient) int
		want outcome
	}{
		{"connect", as("dev", "d1"), nil, outcome{0, 0}},
		{"connect without vhost access", as("nobody", "n1"), nil, outcome{0x87, 0x05}},
		{"connect with a wrong password", rawOpts{ClientID: "d1", Username: "dev", Password: "wrong"}, nil, outcome{0x86, 0x05}},
		{"connect with an allowed will", withWill(as("dev", "d1"), "devices/d1/status"), nil, outcome{0, 0}},
		{"connect with a refused will", withWill(as("dev", "d1"), "devices/d2/status"), nil, outcome{0x87, 0x05}},
		{"subscribe", as("dev", "d1"), subscribeCode("commands/d1/#"), outcome{1, 1}},
		{"subscribe, topic read refused", as("dev", "d1"), subscribeCode("commands/d2/#"), outcome{0x87, 0x80}},
		{"subscribe, exchange read refused", as("noread", "r1"), subscribeCode("commands/r1/#"), outcome{0x87, 0x80}},
		{"publish QoS 1", as("dev", "d1"), publishCode("devices/d1/temp", 1, false), outcome{0, 0}},
		{"publish QoS 1, topic write refused", as("dev", "d1"), publishCode("devices/d2/temp", 1, false), outcome{0x87, -1}},
		{"publish QoS 0, topic write refused", as("dev", "d1"), publishCode("devices/d2/temp", 0, false), outcome{0x87, -1}},
		{"publish QoS 2, topic write refused", as("dev", "d1"), publishCode("devices/d2/temp", 2, false), outcome{0x87, -1}},
		{"publish retained", as("dev", "d1"), publishCode("devices/d1/cfg", 1, true), outcome{0, 0}},
		{"publish retained, topic write refused", as("dev", "d1"), publishCode("devices/d2/cfg", 1, true), outcome{0x87, -1}},
	}
	for _, tc := range tests {
		for _, v := range []byte{5, 4} {
			t.Run(tc.name+"/"+versionName(v), func(t *testing.T) {
				o := tc.opts
				o.Version = v
				want := tc.want.v3
				if v == 5 {
					want = tc.want.v5
				}
				c, code := dialRawCode(t, b.MQTTAddr, o)
				if tc.op == nil || code != 0 {
					if int(code) != want {
						t.Fatalf("CONNACK %#x, want %#x", code, want)
					}
					return
				}
				if got := tc.op(t, c); got != want {
					t.Fatalf("got %#x, want %#x", got, want)
				}
			})
		}
	}
	// Refused retained messages were not kept: a new subscriber to
	// devices/# gets the allowed one only.
	c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "admin"})
	c.subscribe(t, 0, rawSub{Filter: "devices/+/cfg", Opts: 1})
	if p := c.nextPub(t, "retained"); p.Topic != "devices/d1/cfg" {
		t.Fatalf("retained message on %s", p.Topic)
	}
	c.ping(t)
	select {
	case p := <-c.pubs:
		t.Fatalf("a refused retained message was kept: %s", p.Topic)
	default:
	}
}

func withWill(o rawOpts, topic string) rawOpts {
	o.Will = &rawWill{Topic: topic, Payload: "gone", QoS: 1}
	return o
}

func subscribeCode(filter string) func(t *testing.T, c *rawClient) int {
	return func(t *testing.T, c *rawClient) int {
		return int(c.subscribe(t, 0, rawSub{Filter: filter, Opts: 1})[0])
	}
}

// publishCode publishes and returns the PUBACK/PUBREC failure reason code
// (0 for any success), the DISCONNECT reason, or -1 for a close without
// DISCONNECT.
func publishCode(topic string, qos byte, retain bool) func(t *testing.T, c *rawClient) int {
	return func(t *testing.T, c *rawClient) int {
		pk, id := c.publishPacket(topic, qos, "x", nil)
		if retain {
			pk[0] |= 1
		}
		c.write(t, pk)
		if qos == 0 {
			// Nothing acknowledges QoS 0: a PINGRESP or the close tells.
			if c.writeErr([]byte{0xC0, 0}) == nil {
				if _, ok := c.awaitOrClose(t, typPingresp, -1, "PINGRESP"); ok {
					return 0
				}
			}
			return c.waitClosed(t, mqttWait)
		}
		typ := byte(typPuback)
		if qos == 2 {
			typ = typPubrec
		}
		p, ok := c.awaitOrClose(t, typ, int(id), "acknowledgement")
		if !ok {
			return c.waitClosed(t, mqttWait)
		}
		if len(p.body) < 3 || p.body[2] < 0x80 {
			return 0 // success, or 0x10 no matching subscribers
		}
		return int(p.body[2])
	}
}

// TestMQTTClientIDOwnership: a client id belongs to the user who
// connected with it; another user's CONNECT with it is refused while it
// is in use and while its session is stored, and takes nothing over.
func TestMQTTClientIDOwnership(t *testing.T) {
	b, _ := accessBroker(t, time.Millisecond)
	for _, v := range []byte{5, 4} {
		t.Run(versionName(v), func(t *testing.T) {
			id := "owned-" + versionName(v)
			owner := rawOpts{Version: v, ClientID: id, Username: "other", Password: "other-pw", Resume: true, SessionExpiry: 3600}
			if v == 4 {
				owner.SessionExpiry = 0
			}
			thief := rawOpts{Version: v, ClientID: id, Username: "dev", Password: "dev-pw"}
			wantCode := byte(0x85)
			if v == 4 {
				wantCode = 0x02
			}
			c := dialRaw(t, b.MQTTAddr, owner)
			c.subscribe(t, 0, rawSub{Filter: "commands/#", Opts: 1})
			if _, code := dialRawCode(t, b.MQTTAddr, thief); code != wantCode {
				t.Fatalf("CONNACK to another user while in use: %#x, want %#x", code, wantCode)
			}
			c.ping(t) // not taken over
			c.write(t, []byte{0xE0, 0})
			c.waitClosed(t, mqttWait)
			if _, code := dialRawCode(t, b.MQTTAddr, thief); code != wantCode {
				t.Fatalf("CONNACK to another user with a stored session: %#x, want %#x", code, wantCode)
			}
			if c := dialRaw(t, b.MQTTAddr, owner); !c.SessionPresent {
				t.Fatal("the owner's session is gone")
			}
		})
	}
}

// TestMQTTLimits: a vhost's connection limit refuses with 0x97 (MQTT 5)
// and 0x03 (3.1.1).
func TestMQTTLimits(t *testing.T) {
	b, users := accessBroker(t, time.Millisecond)
	b.Core.AddVHost("small").SetLimits(core.VHostLimits{MaxConnections: 1})
	must(t, users.SetPermissions("other", "small", core.FullPermissions))
	dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "s1", Username: "small:other", Password: "other-pw"})
	for _, tc := range []struct {
		v    byte
		want byte
	}{{5, 0x97}, {4, 0x03}} {
		if _, code := dialRawCode(t, b.MQTTAddr, rawOpts{Version: tc.v, ClientID: "s2", Username: "small:other", Password: "other-pw"}); code != tc.want {
			t.Errorf("%s: CONNACK %#x, want %#x", versionName(tc.v), code, tc.want)
		}
	}
}

// TestMQTTCrossProtocol: an AMQP user, even with every permission, cannot
// consume an MQTT client's session queue; an MQTT user without read on
// the exchange AMQP publishes to cannot subscribe to those messages.
func TestMQTTCrossProtocol(t *testing.T) {
	b, _ := accessBroker(t, time.Millisecond)
	dev := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "d1", Username: "dev", Password: "dev-pw", Resume: true, SessionExpiry: 3600})
	dev.subscribe(t, 0, rawSub{Filter: "commands/d1/#", Opts: 1})

	amqpURL := strings.Replace(b.URL, "guest:guest", "other:other-pw", 1)
	conn, err := amqp091.Dial(amqpURL)
	must(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	must(t, err)
	closed := ch.NotifyClose(make(chan *amqp091.Error, 1))
	_, err = ch.Consume("mqtt-subscription-d1qos1", "", true, false, false, false, nil)
	var ae *amqp091.Error
	if !errors.As(err, &ae) {
		select {
		case ae = <-closed:
		case <-time.After(mqttWait):
		}
	}
	if ae == nil || ae.Code != amqp091.AccessRefused ||
		!strings.Contains(ae.Reason, "access to queue 'mqtt-subscription-d1qos1' in vhost '/' refused for user 'other'") {
		t.Fatalf("consuming another client's session queue: %v, want 403", ae)
	}

	// AMQP publishes orders; noread may not read amq.topic.
	r := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "r1", Username: "noread", Password: "noread-pw"})
	if code := r.subscribe(t, 0, rawSub{Filter: "orders/#", Opts: 1})[0]; code != 0x87 {
		t.Fatalf("SUBACK %#x, want 0x87", code)
	}
	pub := b.amqpChannel(t)
	must(t, pub.PublishWithContext(context.Background(), "amq.topic", "orders.new", false, false, amqp091.Publishing{Body: []byte("o")}))
	// The commands to d1 still flow from AMQP to the session it owns.
	must(t, pub.PublishWithContext(context.Background(), "amq.topic", "commands.d1.reboot", false, false, amqp091.Publishing{Body: []byte("c")}))
	if p := dev.nextPub(t, "command"); p.Topic != "commands/d1/reboot" {
		t.Fatalf("got %s", p.Topic)
	}
	r.ping(t)
	select {
	case p := <-r.pubs:
		t.Fatalf("noread received %s", p.Topic)
	default:
	}
}

// TestMQTTLoginFailureDelay: a refused CONNECT is answered after the
// delay, while other clients connect and exchange messages meanwhile.
func TestMQTTLoginFailureDelay(t *testing.T) {
	bad := func(i int) rawOpts {
		return rawOpts{Version: 5, ClientID: fmt.Sprint("bad", i), Username: "dev", Password: "guess"}
	}
	t.Run("others work meanwhile", func(t *testing.T) {
		// A delay no test run reaches: a good client working while the
		// failed logins are held shows that they hold nothing else up,
		// however slowly the machine runs it (with a delay of seconds, a
		// loaded machine could take longer than the delay over the good
		// client's work). Shutdown at cleanup lets them go.
		b, _ := accessBroker(t, time.Hour)
		answered := make(chan error, 4)
		for i := range cap(answered) {
			conn, err := net.DialTimeout("tcp", b.MQTTAddr, mqttWait)
			must(t, err)
			t.Cleanup(func() { conn.Close() })
			_, err = conn.Write(bad(i).connectPacket())
			must(t, err)
			go func() {
				// Anything, or the end of the connection, is an answer.
				_, err := conn.Read(make([]byte, 1))
				answered <- err
			}()
		}
		c := dialRaw(t, b.MQTTAddr, rawOpts{Version: 5, ClientID: "good", Username: "other", Password: "other-pw"})
		c.subscribe(t, 0, rawSub{Filter: "t", Opts: 1})
		c.publish(t, "t", 1, "hi", nil)
		if p := c.nextPub(t, "own message"); p.Topic != "t" {
			t.Fatalf("got %s", p.Topic)
		}
		select {
		case err := <-answered:
			t.Fatalf("a failed login was answered (%v) before the good client finished", err)
		default:
		}
	})
	t.Run("refused after the delay", func(t *testing.T) {
		const delay = time.Second
		b, _ := accessBroker(t, delay)
		type result struct {
			code byte
			took time.Duration
		}
		results := make(chan result, 4)
		for i := range cap(results) {
			go func() {
				start := time.Now()
				_, code := dialRawCode(t, b.MQTTAddr, bad(i))
				results <- result{code, time.Since(start)}
			}()
		}
		for range cap(results) {
			r := <-results
			if r.code != 0x86 || r.took < delay {
				t.Errorf("CONNACK %#x after %v, want 0x86 after at least %v", r.code, r.took, delay)
			}
		}
	})
}

// TestMQTTVHostDelete: deleting a vhost disconnects its MQTT clients
// (MQTT 5: 0x98 administrative action) and forgets its retained
// messages, so a vhost of the same name starts empty.
func TestMQTTVHostDelete(t *testing.T) {
	b, users := accessBroker(t, time.Millisecond)
	b.Core.AddVHost("tmp")
	must(t, users.SetPermissions("other", "tmp", core.FullPermissions))
	o := rawOpts{Version: 5, ClientID: "t1", Username: "tmp:other", Password: "other-pw"}
	c := dialRaw(t, b.MQTTAddr, o)
	pk, id := c.publishPacket("cfg/a", 1, "kept", nil)
	pk[0] |= 1 // retain
	c.write(t, pk)
	c.await(t, typPuback, int(id), "PUBACK")
	must(t, b.Core.DeleteVHost("tmp"))
	if code := c.waitClosed(t, mqttWait); code != 0x98 {
		t.Fatalf("DISCONNECT %#x, want 0x98", code)
	}
	if _, code := dialRawCode(t, b.MQTTAddr, o); code != 0x87 {
		t.Fatalf("CONNACK to the deleted vhost %#x, want 0x87", code)
	}
	b.Core.AddVHost("tmp")
	c = dialRaw(t, b.MQTTAddr, o)
	c.subscribe(t, 0, rawSub{Filter: "cfg/#", Opts: 1})
	c.ping(t)
	select {
	case p := <-c.pubs:
		t.Fatalf("the deleted vhost's retained message came back: %s", p.Topic)
	default:
	}
}
