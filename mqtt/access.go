package mqtt

import (
	"net"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// RabbitMQ's MQTT plugin maps MQTT onto the AMQP permissions: connecting
// needs access to the vhost; a subscription needs configure, write and read
// on its queue, read on the MQTT exchange and topic read on the filter;
// a publish (and a will) needs write on the MQTT exchange and topic write
// on its routing key. Topic permissions see AMQP routing keys (a/b is a.b).

// argOwner on a session queue names the user whose client id it is, so
// that the id stays that user's across restarts.
const argOwner = "x-mqtt-owner"

// login authenticates the CONNECT's user and admits it to its vhost: a
// username "vhost:user" selects a vhost; no username at all is RabbitMQ's
// anonymous default, guest (loopback only). With UseIdentityAsUsername, a
// client with a verified certificate and no password is the user its
// certificate names (no password checked), in the vhost its username
// selects, if any. A failed login is logged at
// WARN and answered after the login failure delay.
func (c *client) login(pk *packets.Packet) (*core.Access, packets.Code) {
	user, pass := "guest", "guest"
	vhost := "/"
	if pk.Connect.UsernameFlag {
		vhost, user = vhostUser(string(pk.Connect.Username))
		pass = string(pk.Connect.Password)
	}
	mechanism := "mqtt"
	name, passwordless := c.identity(pk)
	if passwordless {
		user, mechanism = name, "mqtt-certificate"
	}
	peer := c.conn.RemoteAddr().String()
	host, _, _ := net.SplitHostPort(peer)
	srv := c.srv
	p, err := srv.cfg.Auth.Login(srv.ctx, core.LoginRequest{
		Username: user, Password: pass, Passwordless: passwordless, Mechanism: mechanism,
		Peer: host, Loopback: c.remoteIsLoopback(), ClientID: c.id,
	})
	if err != nil {
		srv.log.Warn("mqtt: login failed", "user", user, "vhost", vhost, "peer", peer, "mechanism", mechanism, "client", c.id, "reason", err)
		c.delayRefusal()
		return nil, packets.ErrBadUsernameOrPassword
	}
	local := c.conn.LocalAddr().String()
	proto := core.ProtocolMQTT311
	switch c.version {
	case 5:
		proto = core.ProtocolMQTT5
	case 3:
		proto = core.ProtocolMQTT31
	}
	a, err := srv.broker.Open(srv.ctx, p, vhost, core.ConnInfo{
		Name: core.ConnName(peer, local), Protocol: proto, Peer: peer, Local: local, ClientID: c.id, TLS: c.tls,
		ClientProperties: core.Table{"client_id": c.id},
		// MQTT 5: DISCONNECT 0x98 Administrative action; 3.x: the
		// connection is closed, the only way it can be told.
		Close:        func(string) { c.close(packets.ErrAdministrativeAction) },
		ListChannels: c.listChannels,
	})
	if err != nil {
		srv.log.Warn("mqtt: connection refused", "user", user, "vhost", vhost, "peer", peer, "client", c.id, "err", err)
		if core.IsLimit(err) {
			return nil, packets.ErrQuotaExceeded
		}
		return nil, packets.ErrNotAuthorized
	}
	return a, packets.CodeSuccess
}

// delayRefusal waits out the login failure delay on this client's own
// goroutine, or until the server closes.
func (c *client) delayRefusal() {
	d := c.srv.cfg.LoginFailureDelay
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.srv.ctx.Done():
	}
}

// checkPublish: write on the MQTT exchange and topic write on the
// publish's routing key (its topic, mapped: the caller has it at hand).
func checkPublish(srv *Server, a *core.Access, routingKey string) error {
	x := srv.cfg.Exchange
	if err := a.Check(srv.ctx, core.KindExchange, x, core.Write); err != nil {
		return err
	}
	return a.CheckTopic(srv.ctx, x, routingKey, core.Write)
}

// checkSubscribe: configure (to declare it), write (to bind) and read (to
// consume) on the subscription's queue, read on the MQTT exchange, topic
// read on the filter's binding key.
func (s *session) checkSubscribe(queue, filter string) error {
	a, ctx, x := s.access, s.srv.ctx, s.srv.cfg.Exchange
	for _, perm := range []core.Permission{core.Configure, core.Write, core.Read} {
		if err := a.Check(ctx, core.KindQueue, queue, perm); err != nil {
			return err
		}
	}
	if err := a.Check(ctx, core.KindExchange, x, core.Read); err != nil {
		return err
	}
	return a.CheckTopic(ctx, x, topic.BindingKey(filter), core.Read)
}

// sessionOwner returns the user a client id belongs to: the one of its
// live or remembered session, else the one recorded on its durable
// session queue (sessions outlive restarts); "" if none.
func sessionOwner(st *state, s *session) string {
	if st != nil && st.owner != "" {
		return st.owner
	}
	for qos := byte(0); qos <= 1; qos++ {
		if q := s.vhost.Queue(s.queueName(qos)); q != nil {
			if owner, ok := q.Arguments()[argOwner].(string); ok {
				return owner
			}
		}
	}
	return ""
}

// listChannels implements core.ConnInfo.ListChannels as RabbitMQ's MQTT
// plugin shows a connection: one channel, whose consumers are the
// session's queues. It takes client.mu, then session.mu, each alone.
func (c *client) listChannels() []core.ChannelInfo {
	c.mu.Lock()
	s := c.sess
	c.mu.Unlock()
	ch := core.ChannelInfo{Number: 1, PrefetchCount: 0}
	if s == nil {
		return []core.ChannelInfo{ch}
	}
	ch.PrefetchCount = s.prefetch
	s.mu.Lock()
	defer s.mu.Unlock()
	ch.Unacked = len(s.flight)
	for q, cons := range s.cons {
		ch.ConsumerList = append(ch.ConsumerList, core.ConsumerInfo{
			Tag: cons.Tag(), Queue: q, AckRequired: !strings.HasSuffix(q, "qos0"), Prefetch: s.prefetch,
		})
	}
	ch.Consumers = len(ch.ConsumerList)
	return []core.ChannelInfo{ch}
}
