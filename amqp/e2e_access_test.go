package amqp_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
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

// guestIn returns the default users, with guest given every permission
// in vhost as well as in "/".
func guestIn(t testing.TB, vhost string) *core.Auth {
	t.Helper()
	users := core.DefaultUsers()
	if err := users.SetPermissions("guest", vhost, core.FullPermissions); err != nil {
		t.Fatal(err)
	}
	return core.NewAuth(users)
}

// attempt runs op on a fresh channel of conn and returns the channel or
// connection error it ended in, nil if it succeeded. An asynchronous
// refusal (basic.publish) is caught by a passive declare after it, which
// needs no permission.
func attempt(t testing.TB, conn *amqp091.Connection, op func(ch *amqp091.Channel) error) *amqp091.Error {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("channel: %v", err)
	}
	closed := notifyChannelClose(ch)
	err = op(ch)
	if err == nil {
		err = ch.ExchangeDeclarePassive("amq.direct", "direct", true, false, false, false, nil)
	}
	if err == nil {
		ch.Close()
		return nil
	}
	select {
	case e := <-closed:
		if e != nil {
			return e
		}
	case <-time.After(waitTimeout):
	}
	var ae *amqp091.Error
	if errors.As(err, &ae) {
		return ae
	}
	t.Fatalf("operation failed without a channel error: %v", err)
	return nil
}

// accessFixture is a server where guest (administrator) set up
// exchanges and queues that belong to nobody, and two users with
// RabbitMQ-style permissions:
//
//	alice: configure ^alice-|^amq\.gen-  write ^alice-|^amq\.(default|gen-)  read ^alice-|^amq\.(topic|gen-)
//	bob:   configure ^bob-  write ^bob-  read ^bob-   (and topic permissions on amq.topic)
type accessFixture struct {
	url          string
	broker       *core.Broker
	guest        *amqp091.Connection
	alice, bob   *amqp091.Connection
	aliceURL     string
	users        *core.Users
	server       *amqp.Server
	loginRefused time.Duration
}

func newAccessFixture(t *testing.T, cfg amqp.Config) *accessFixture {
	t.Helper()
	users := core.DefaultUsers()
	put := func(name string, p core.VHostPermissions, tags ...string) {
		must(t, users.Put(core.UserSpec{Name: name, PasswordHash: core.HashPassword(name + "-pw"), Tags: tags}))
		must(t, users.SetPermissions(name, "/", p))
	}
	put("alice", core.VHostPermissions{Configure: `^alice-|^amq\.gen-`, Write: `^alice-|^amq\.(default|gen-)`, Read: `^alice-|^amq\.(topic|gen-)`})
	put("bob", core.VHostPermissions{Configure: `^bob-`, Write: `^bob-|^amq\.topic$`, Read: `^bob-|^amq\.topic$`})
	must(t, users.SetTopicPermissions("bob", "/", core.TopicPermissions{Exchange: "amq.topic", Write: `^sensors\.{username}\.`, Read: `^commands\.{username}\.`}))
	cfg.Auth = core.NewAuth(users)
	if cfg.LoginFailureDelay == 0 {
		cfg.LoginFailureDelay = time.Millisecond
	}
	url, srv, broker := startServer(t, cfg)
	f := &accessFixture{url: url, broker: broker, users: users, server: srv}
	f.guest = dial(t, url)
	ch := openChannel(t, f.guest)
	declareExchange(t, ch, "other-x", "direct", nil)
	declareExchange(t, ch, "alice-x", "direct", nil)
	declareExchange(t, ch, "bob-x", "direct", nil)
	declareQueue(t, ch, "other-q", nil)
	declareQueue(t, ch, "alice-q", nil)
	declareQueue(t, ch, "bob-q", nil)
	declareQueue(t, ch, "mqtt-subscription-dev1qos1", nil)
	declareQueue(t, ch, "bridge.cloud", nil)
	f.aliceURL = withCreds(t, url, "alice", "alice-pw", "/")
	f.alice = dial(t, f.aliceURL)
	f.bob = dial(t, withCreds(t, url, "bob", "bob-pw", "/"))
	return f
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestE2EPermissionMatrix: every AMQP method RabbitMQ checks, allowed and
// refused, with RabbitMQ's reply code and text.
func TestE2EPermissionMatrix(t *testing.T) {
	t.Parallel()
	f := newAccessFixture(t, amqp.Config{})
	refused := func(perm, kind, name, user string) string {
		return "ACCESS_REFUSED - " + perm + " access to " + kind + " '" + name + "' in vhost '/' refused for user '" + user + "'"
	}
	type op = func(ch *amqp091.Channel) error
	publishTo := func(x, key string) op {
		return func(ch *amqp091.Channel) error {
			return ch.PublishWithContext(context.Background(), x, key, false, false, amqp091.Publishing{Body: []byte("m")})
		}
	}
	consumeFrom := func(q string) op {
		return func(ch *amqp091.Channel) error {
			_, err := ch.Consume(q, "", true, false, false, false, nil)
			return err
		}
	}
	getFrom := func(q string) op {
		return func(ch *amqp091.Channel) error { _, _, err := ch.Get(q, true); return err }
	}
	tests := []struct {
		method string
		conn   *amqp091.Connection
		op     op
		want   string // "" allowed; else the full reply text of a 403
	}{
		{"exchange.declare", f.alice, func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("alice-new", "fanout", false, true, false, false, nil)
		}, ""},
		{"exchange.declare", f.alice, func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("other-new", "fanout", false, true, false, false, nil)
		}, refused("configure", "exchange", "other-new", "alice")},
		{"exchange.declare passive (no permission needed)", f.alice, func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclarePassive("other-x", "direct", false, false, false, false, nil)
		}, ""},
		{"exchange.declare with alternate-exchange", f.alice, func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("alice-ae1", "fanout", false, true, false, false, amqp091.Table{"alternate-exchange": "alice-x"})
		}, ""},
		{"exchange.declare with alternate-exchange", f.alice, func(ch *amqp091.Channel) error {
			return ch.ExchangeDeclare("alice-ae2", "fanout", false, true, false, false, amqp091.Table{"alternate-exchange": "other-x"})
		}, refused("write", "exchange", "other-x", "alice")},
		{"exchange.delete", f.alice, func(ch *amqp091.Channel) error { return ch.ExchangeDelete("alice-gone", false, false) }, ""},
		{"exchange.delete", f.alice, func(ch *amqp091.Channel) error { return ch.ExchangeDelete("other-x", false, false) },
			refused("configure", "exchange", "other-x", "alice")},
		{"exchange.bind", f.alice, func(ch *amqp091.Channel) error { return ch.ExchangeBind("alice-x", "k", "alice-x", false, nil) }, ""},
		{"exchange.bind (destination)", f.alice, func(ch *amqp091.Channel) error { return ch.ExchangeBind("other-x", "k", "alice-x", false, nil) },
			refused("write", "exchange", "other-x", "alice")},
		{"exchange.bind (source)", f.alice, func(ch *amqp091.Channel) error { return ch.ExchangeBind("alice-x", "k", "other-x", false, nil) },
			refused("read", "exchange", "other-x", "alice")},
		{"exchange.unbind", f.alice, func(ch *amqp091.Channel) error { return ch.ExchangeUnbind("alice-x", "k", "alice-x", false, nil) }, ""},
		{"exchange.unbind (source)", f.alice, func(ch *amqp091.Channel) error { return ch.ExchangeUnbind("alice-x", "k", "other-x", false, nil) },
			refused("read", "exchange", "other-x", "alice")},
		{"queue.declare", f.alice, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("alice-new", false, true, false, false, nil)
			return err
		}, ""},
		{"queue.declare", f.alice, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("other-new", false, true, false, false, nil)
			return err
		},
			refused("configure", "queue", "other-new", "alice")},
		{"queue.declare passive (no permission needed)", f.alice, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclarePassive("other-q", false, false, false, false, nil)
			return err
		}, ""},
		{"queue.declare server-named", f.alice, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("", false, true, true, false, nil)
			return err
		}, ""},
		{"queue.declare server-named", f.bob, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("", false, true, true, false, nil)
			return err
		},
			"ACCESS_REFUSED - configure access to queue 'amq.gen-"},
		{"queue.declare with dead-letter-exchange", f.alice, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("alice-dl1", false, true, false, false, amqp091.Table{"x-dead-letter-exchange": "alice-x"})
			return err
		}, ""},
		{"queue.declare with dead-letter-exchange", f.alice, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDeclare("alice-dl2", false, true, false, false, amqp091.Table{"x-dead-letter-exchange": "other-x"})
			return err
		}, refused("write", "exchange", "other-x", "alice")},
		{"queue.delete", f.alice, func(ch *amqp091.Channel) error {
			_, err := ch.QueueDelete("alice-gone", false, false, false)
			return err
		}, ""},
		{"queue.delete", f.alice, func(ch *amqp091.Channel) error { _, err := ch.QueueDelete("other-q", false, false, false); return err },
			refused("configure", "queue", "other-q", "alice")},
		{"queue.purge", f.alice, func(ch *amqp091.Channel) error { _, err := ch.QueuePurge("alice-q", false); return err }, ""},
		{"queue.purge", f.alice, func(ch *amqp091.Channel) error { _, err := ch.QueuePurge("other-q", false); return err },
			refused("read", "queue", "other-q", "alice")},
		{"queue.bind", f.alice, func(ch *amqp091.Channel) error { return ch.QueueBind("alice-q", "k", "amq.topic", false, nil) }, ""},
		{"queue.bind (queue)", f.alice, func(ch *amqp091.Channel) error { return ch.QueueBind("other-q", "k", "amq.topic", false, nil) },
			refused("write", "queue", "other-q", "alice")},
		{"queue.bind (exchange)", f.alice, func(ch *amqp091.Channel) error { return ch.QueueBind("alice-q", "k", "other-x", false, nil) },
			refused("read", "exchange", "other-x", "alice")},
		{"queue.unbind", f.alice, func(ch *amqp091.Channel) error { return ch.QueueUnbind("alice-q", "k", "amq.topic", nil) }, ""},
		{"queue.unbind (exchange)", f.alice, func(ch *amqp091.Channel) error { return ch.QueueUnbind("alice-q", "k", "other-x", nil) },
			refused("read", "exchange", "other-x", "alice")},
		{"basic.publish", f.alice, publishTo("alice-x", "k"), ""},
		{"basic.publish", f.alice, publishTo("other-x", "k"), refused("write", "exchange", "other-x", "alice")},
		{"basic.publish default exchange", f.alice, publishTo("", "alice-q"), ""},
		{"basic.publish default exchange", f.bob, publishTo("", "bob-q"), refused("write", "exchange", "amq.default", "bob")},
		{"basic.consume", f.alice, consumeFrom("alice-q"), ""},
		{"basic.consume", f.alice, consumeFrom("other-q"), refused("read", "queue", "other-q", "alice")},
		{"basic.get", f.alice, getFrom("alice-q"), ""},
		{"basic.get", f.alice, getFrom("other-q"), refused("read", "queue", "other-q", "alice")},
		// Topic permissions (bob, on amq.topic): {username} expanded.
		{"basic.publish topic", f.bob, publishTo("amq.topic", "sensors.bob.temp"), ""},
		{"basic.publish topic", f.bob, publishTo("amq.topic", "sensors.alice.temp"),
			"ACCESS_REFUSED - write access to topic 'sensors.alice.temp' in exchange 'amq.topic' in vhost '/' refused for user 'bob'"},
		{"queue.bind topic", f.bob, func(ch *amqp091.Channel) error {
			return ch.QueueBind("bob-q", "commands.bob.#", "amq.topic", false, nil)
		}, ""},
		{"queue.bind topic", f.bob, func(ch *amqp091.Channel) error { return ch.QueueBind("bob-q", "commands.#", "amq.topic", false, nil) },
			"ACCESS_REFUSED - read access to topic 'commands.#' in exchange 'amq.topic' in vhost '/' refused for user 'bob'"},
		// Internal queues: an MQTT client's session queue and a bridge's,
		// even with read permission on them (alice reads ^amq\.gen- only;
		// guest is administrator).
		{"basic.consume MQTT session queue", f.guest, consumeFrom("mqtt-subscription-dev1qos1"), ""},
		{"basic.get bridge queue", f.guest, getFrom("bridge.cloud"), ""},
	}
	// Entities the allowed deletes delete.
	ch := openChannel(t, f.guest)
	declareExchange(t, ch, "alice-gone", "direct", nil)
	declareQueue(t, ch, "alice-gone", nil)
	for _, tc := range tests {
		name := tc.method
		if tc.want == "" {
			name += "/allowed"
		} else {
			name += "/refused"
		}
		t.Run(name, func(t *testing.T) {
			e := attempt(t, tc.conn, tc.op)
			switch {
			case tc.want == "" && e != nil:
				t.Fatalf("refused: %v", e)
			case tc.want == "":
			case e == nil:
				t.Fatalf("allowed, want %q", tc.want)
			case e.Code != amqp091.AccessRefused || !strings.HasPrefix(e.Reason, tc.want):
				t.Fatalf("got %d %q, want 403 %q", e.Code, e.Reason, tc.want)
			}
		})
	}
}

// TestE2EInternalQueues: an MQTT client's session queue and a bridge's
// queue are refused to a user who is not an administrator even with every
// permission, for consume, get, purge and delete.
func TestE2EInternalQueues(t *testing.T) {
	t.Parallel()
	f := newAccessFixture(t, amqp.Config{})
	must(t, f.users.Put(core.UserSpec{Name: "carol", PasswordHash: core.HashPassword("pw"), Tags: []string{core.TagMonitoring}}))
	must(t, f.users.SetPermissions("carol", "/", core.FullPermissions))
	carol := dial(t, withCreds(t, f.url, "carol", "pw", "/"))
	for _, q := range []string{"mqtt-subscription-dev1qos1", "bridge.cloud"} {
		for _, o := range []struct {
			name string
			op   func(ch *amqp091.Channel) error
		}{
			{"consume", func(ch *amqp091.Channel) error {
				_, err := ch.Consume(q, "", true, false, false, false, nil)
				return err
			}},
			{"get", func(ch *amqp091.Channel) error { _, _, err := ch.Get(q, true); return err }},
			{"purge", func(ch *amqp091.Channel) error { _, err := ch.QueuePurge(q, false); return err }},
			{"delete", func(ch *amqp091.Channel) error { _, err := ch.QueueDelete(q, false, false, false); return err }},
		} {
			e := attempt(t, carol, o.op)
			if e == nil || e.Code != amqp091.AccessRefused || !strings.Contains(e.Reason, "access to queue '"+q+"' in vhost '/' refused for user 'carol'") {
				t.Errorf("%s %s: %v, want 403", o.name, q, e)
			}
		}
	}
	if !queueExists(t, f.guest, "mqtt-subscription-dev1qos1") || !queueExists(t, f.guest, "bridge.cloud") {
		t.Fatal("an internal queue was deleted")
	}
}

// TestE2ELimits: vhost and user connection limits, the user channel limit
// and the vhost queue limit, refused as RabbitMQ refuses them.
func TestE2ELimits(t *testing.T) {
	t.Parallel()
	f := newAccessFixture(t, amqp.Config{})
	must(t, f.users.Put(core.UserSpec{Name: "lim", PasswordHash: core.HashPassword("pw"), MaxConnections: 2, MaxChannels: 2}))
	must(t, f.users.SetPermissions("lim", "/", core.FullPermissions))
	must(t, f.users.SetPermissions("lim", "small", core.FullPermissions))
	f.broker.AddVHost("small").SetLimits(core.VHostLimits{MaxConnections: 1, MaxQueues: 1})
	small := withCreds(t, f.url, "lim", "pw", "/small")
	c1 := dial(t, small)
	_, err := amqp091.Dial(small)
	wantReplyText(t, wantAMQPError(t, err, amqp091.NotAllowed), "connection refused: connection limit (1) is reached for vhost 'small'")

	root := withCreds(t, f.url, "lim", "pw", "/")
	c2 := dial(t, root)
	_, err = amqp091.Dial(root)
	wantReplyText(t, wantAMQPError(t, err, amqp091.NotAllowed), "Connection refused for user 'lim': user connection limit (2) is reached")

	// Two channels over the user's connections; the third closes its connection.
	openChannel(t, c1)
	openChannel(t, c2)
	closed := notifyConnClose(c2)
	if _, err := c2.Channel(); err == nil {
		t.Fatal("a third channel opened")
	}
	wantReplyText(t, waitClosedWith(t, closed, amqp091.NotAllowed, "channel limit"),
		"number of channels opened for user 'lim' has reached the maximum allowed user limit of (2)")

	// One queue in vhost small.
	ch := openChannel(t, c1)
	declareQueue(t, ch, "q1", nil)
	_, err = ch.QueueDeclare("q2", false, false, false, false, nil)
	wantReplyText(t, wantAMQPError(t, err, amqp091.PreconditionFailed), "cannot declare queue 'q2': queue limit in vhost 'small' (1) is reached")
}

// TestE2EVHostDelete: deleting a vhost closes its connections with 320
// and removes its queues; it can then not be connected to.
func TestE2EVHostDelete(t *testing.T) {
	t.Parallel()
	url, _, broker := startServer(t, amqp.Config{Auth: guestIn(t, "tmp")})
	broker.AddVHost("tmp")
	tmp := withCreds(t, url, "guest", "guest", "/tmp")
	conn := dial(t, tmp)
	declareQueue(t, openChannel(t, conn), "q", nil)
	closed := notifyConnClose(conn)
	must(t, broker.DeleteVHost("tmp"))
	wantReplyText(t, waitClosedWith(t, closed, amqp091.ConnectionForced, "vhost deleted"), "vhost 'tmp' is deleted")
	_, err := amqp091.Dial(tmp)
	wantReplyText(t, wantAMQPError(t, err, amqp091.NotAllowed), "vhost tmp not found")
	broker.AddVHost("tmp")
	if queueExists(t, dial(t, tmp), "q") {
		t.Fatal("the deleted vhost's queue came back with it")
	}
}

// TestE2ELoginFailureDelay: a failed login is answered only after the
// delay, and meanwhile other clients connect and work at full speed.
func TestE2ELoginFailureDelay(t *testing.T) {
	t.Parallel()
	type result struct {
		err  error
		took time.Duration
	}
	attack := func(url string, n int) <-chan result {
		results := make(chan result, n)
		for range n {
			go func() {
				start := time.Now()
				_, err := amqp091.Dial(url)
				results <- result{err, time.Since(start)}
			}()
		}
		return results
	}
	t.Run("others work meanwhile", func(t *testing.T) {
		t.Parallel()
		// A delay no test run reaches: a good client working while the
		// failed logins are held shows that they hold nothing else up,
		// however slowly the machine runs it (with a delay of seconds, a
		// loaded machine could take longer than the delay over the good
		// client's work). Shutdown at cleanup lets them go.
		f := newAccessFixture(t, amqp.Config{LoginFailureDelay: time.Hour})
		results := attack(withCreds(t, f.url, "alice", "wrong", "/"), 4)
		good := dial(t, f.aliceURL)
		ch := openChannel(t, good)
		publishBody(t, ch, "", "alice-q", "through")
		if d := get(t, ch, "alice-q", true); string(d.Body) != "through" {
			t.Fatalf("got %q", d.Body)
		}
		select {
		case r := <-results:
			t.Fatalf("a failed login was answered after %v (%v), before a good client finished", r.took, r.err)
		default:
		}
	})
	t.Run("refused after the delay", func(t *testing.T) {
		t.Parallel()
		const delay = time.Second
		f := newAccessFixture(t, amqp.Config{LoginFailureDelay: delay})
		const attackers = 4
		results := attack(withCreds(t, f.url, "alice", "wrong", "/"), attackers)
		for range attackers {
			r := <-results
			wantReplyText(t, wantAMQPError(t, r.err, amqp091.AccessRefused), "Login was refused using authentication mechanism PLAIN")
			if r.took < delay {
				t.Errorf("refused after %v, want at least %v", r.took, delay)
			}
		}
	})
}
