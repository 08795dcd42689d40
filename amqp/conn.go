package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// version is what connection.start reports as the server version.
const version = "0.1.0"

// conn is one client connection. Fields without a comment are owned by the
// reader goroutine (serve).
type conn struct {
	srv *Server
	nc  net.Conn
	id  uint64 // owner of this connection's exclusive queues
	r   *wire.Reader
	out outbound

	frameMax   uint32
	channelMax uint16
	heartbeat  time.Duration
	vhost      *core.VHost
	access     *core.Access // the user's standing in vhost: permissions, limits
	// ctx ends with the connection: auth backend calls made for it stop.
	ctx        context.Context
	cancel     context.CancelFunc
	name       string // for logs: peer address
	capBlocked bool   // the client handles connection.blocked
	// open is set once the handshake is done: alarm notifications reach
	// only open connections (capBlocked is settled by then).
	open atomic.Bool

	channels map[uint16]*channel
	// listedChans mirrors channels for the operations API (ListChannels).
	listedChans chanList
	started     time.Time // when the client connected
	// confirmDirty lists the channels holding publisher acks to send at
	// the end of this read batch.
	confirmDirty []*channel
	// closing is set once connection.close was sent: only close-ok (or the
	// peer's own close) is read after it.
	closing bool
	// peerClosing is set once the client's connection.close was answered:
	// the client hangs up next, and should be the one to (see serve).
	peerClosing bool

	// forced carries a server-initiated close (Shutdown) to the reader.
	forced     chan string
	forcedOnce sync.Once
	done       chan struct{} // closed when the connection has ended
}

func newConn(s *Server, nc net.Conn) *conn {
	c := &conn{
		srv:      s,
		nc:       nc,
		id:       s.nextID.Add(1),
		r:        wire.NewReader(nc),
		channels: make(map[uint16]*channel),
		forced:   make(chan string, 1),
		done:     make(chan struct{}),
		name:     nc.RemoteAddr().String(),
		started:  time.Now(),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.out.init(nc)
	return c
}

// serve runs the connection until it ends.
func (c *conn) serve() {
	defer close(c.done)
	defer c.cancel()
	defer c.srv.untrack(c)
	defer c.nc.Close()
	log := c.srv.log.With("peer", c.name)
	if tc, ok := c.nc.(*tls.Conn); ok && c.tlsHandshake(tc) != nil {
		return
	}
	if err := c.handshake(); err != nil {
		log.Debug("amqp: handshake failed", "err", err)
		return
	}
	log.Debug("amqp: connection open", "user", c.access.Principal().Name, "vhost", c.vhost.Name())
	go c.out.writeLoop(c.heartbeat)
	c.open.Store(true)
	if ch, reason := c.srv.broker.Blocked(); ch != nil {
		c.notifyBlocked(reason)
	}
	err := c.readLoop()
	c.teardown()
	c.out.finish()
	if c.peerClosing {
		c.awaitHangup()
	}
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		log.Debug("amqp: connection ended", "err", err)
	}
}

// teardown releases everything the connection holds in core: channels
// (consumers cancelled, unacked deliveries requeued) and exclusive queues.
func (c *conn) teardown() {
	for id, ch := range c.channels {
		ch.shutdown()
		delete(c.channels, id)
	}
	if c.vhost != nil {
		c.vhost.ReleaseOwner(c.id)
	}
	if c.access != nil {
		c.access.Close()
	}
}

// awaitHangup waits, briefly, for a client that was sent close-ok to close
// the socket itself, as RabbitMQ does. Closing first races the client's
// reader, which then reports a clean close as an EOF error.
func (c *conn) awaitHangup() {
	c.nc.SetReadDeadline(time.Now().Add(closeTimeout))
	var buf [64]byte
	for {
		if _, err := c.nc.Read(buf[:]); err != nil {
			return
		}
	}
}

// forceClose starts a server-initiated connection.close 320 from another
// goroutine (Shutdown).
func (c *conn) forceClose(reason string) {
	c.forcedOnce.Do(func() {
		c.forced <- reason
		// Wake the reader if it is blocked in a read: the deadline makes it
		// look at c.forced.
		c.nc.SetReadDeadline(time.Now())
	})
}

// handshake runs protocol header, start/start-ok, tune/tune-ok and
// open/open-ok within the handshake timeout. Replies are written directly:
// the writer goroutine starts afterwards, once the heartbeat is known.
func (c *conn) handshake() error {
	cfg := &c.srv.cfg
	c.nc.SetDeadline(time.Now().Add(cfg.HandshakeTimeout))
	defer c.nc.SetDeadline(time.Time{})

	h, err := c.r.ReadProtocolHeader()
	if err != nil {
		return err
	}
	if string(h[:]) != wire.ProtocolHeader {
		c.nc.Write([]byte(wire.ProtocolHeader))
		return errors.New("bad protocol header " + strconv.Quote(string(h[:])))
	}
	mechs := mechanisms
	cert := c.peerCertificate()
	if cert != nil {
		mechs += " " + external
	}
	if err := c.writeNow(&wire.ConnectionStart{
		VersionMajor:     0,
		VersionMinor:     9,
		ServerProperties: serverProperties(),
		Mechanisms:       mechs,
		Locales:          "en_US",
	}); err != nil {
		return err
	}

	var startOk wire.ConnectionStartOk
	if err := c.expect(&startOk); err != nil {
		return err
	}
	if caps, ok := startOk.ClientProperties["capabilities"].(core.Table); ok {
		c.capBlocked, _ = caps["connection.blocked"].(bool)
	}
	principal, err := c.login(&startOk, cert)
	if err != nil {
		return err
	}

	if err := c.writeNow(&wire.ConnectionTune{
		ChannelMax: cfg.ChannelMax,
		FrameMax:   cfg.FrameMax,
		Heartbeat:  uint16(max(cfg.Heartbeat, 0) / time.Second),
	}); err != nil {
		return err
	}
	var tuneOk wire.ConnectionTuneOk
	if err := c.expect(&tuneOk); err != nil {
		return err
	}
	c.channelMax = negotiate(cfg.ChannelMax, tuneOk.ChannelMax)
	c.frameMax = negotiate(cfg.FrameMax, tuneOk.FrameMax)
	if c.frameMax < wire.FrameMinSize {
		return c.refuse(newError(wire.NotAllowed, "frame_max=%d < %d min size", tuneOk.FrameMax, wire.FrameMinSize))
	}
	c.heartbeat = time.Duration(tuneOk.Heartbeat) * time.Second
	c.r.SetMaxFrameSize(c.frameMax)
	c.out.frameMax = c.frameMax

	var open wire.ConnectionOpen
	if err := c.expect(&open); err != nil {
		return err
	}
	c.access, err = c.srv.broker.Open(c.ctx, principal, open.VirtualHost, c.connInfo(startOk.ClientProperties))
	if err != nil {
		c.srv.log.Warn("amqp: connection refused", "peer", c.name, "user", principal.Name, "vhost", open.VirtualHost, "err", err)
		return c.refuse(asAMQPError(err, &open))
	}
	c.vhost = c.access.VHost()
	return c.writeNow(&wire.ConnectionOpenOk{})
}

// negotiate applies the rule for channel-max and frame-max: the lower of
// the two proposals, where 0 means "no limit".
func negotiate[T uint16 | uint32](server, client T) T {
	if client == 0 || client > server {
		return server
	}
	return client
}

// expect reads the next method frame on channel 0, skipping heartbeats, and
// decodes it into m; anything else is a handshake failure.
func (c *conn) expect(m interface {
	wire.Method
	Decode([]byte) error
}) error {
	for {
		f, err := c.r.ReadFrame()
		if err != nil {
			return err
		}
		if f.Type == wire.FrameHeartbeat {
			continue
		}
		want, wantID := m.ID()
		if f.Type != wire.FrameMethod || f.Channel != 0 || len(f.Payload) < 4 ||
			uint16(f.Payload[0])<<8|uint16(f.Payload[1]) != want || uint16(f.Payload[2])<<8|uint16(f.Payload[3]) != wantID {
			return c.refuse(newError(wire.CommandInvalid, "expected %s", wire.MethodName(want, wantID)))
		}
		if err := m.Decode(f.Payload[4:]); err != nil {
			return c.refuse(asAMQPError(err, m))
		}
		return nil
	}
}

// refuse sends connection.close for a handshake failure and returns e. It
// does not wait for close-ok: the peer has not got far enough to be owed
// one, and RabbitMQ closes the socket at once too.
func (c *conn) refuse(e *amqpError) error {
	c.writeNow(&wire.ConnectionClose{ReplyCode: e.code, ReplyText: e.text, ClassID: e.classID, MethodID: e.methodID})
	return e
}

// writeNow writes one method frame on channel 0 synchronously (handshake
// only, before the writer goroutine runs).
func (c *conn) writeNow(m wire.Method) error {
	_, err := c.nc.Write(wire.AppendMethodFrame(nil, 0, m))
	return err
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// serverProperties is connection.start's server-properties, with the
// capabilities RabbitMQ announces for what ferrymq implements.
func serverProperties() core.Table {
	return core.Table{
		"product":      "ferrymq",
		"version":      version,
		"platform":     "Go",
		"copyright":    "ferrymq authors",
		"information":  "https://github.com/ferrymq/ferrymq",
		"cluster_name": "ferrymq",
		"capabilities": core.Table{
			"publisher_confirms":           true,
			"exchange_exchange_bindings":   true,
			"basic.nack":                   true,
			"consumer_cancel_notify":       true,
			"connection.blocked":           true,
			"consumer_priorities":          true,
			"authentication_failure_close": true,
			"per_consumer_qos":             true,
		},
	}
}

// readLoop reads and handles frames until the connection ends. It returns
// nil after a clean close.
func (c *conn) readLoop() error {
	for {
		if !c.r.FrameBuffered() {
			// About to block on the socket: send what this batch produced.
			c.flushConfirms()
			c.out.waitDrained()
			if err := c.setReadDeadline(); err != nil {
				return err
			}
		}
		f, err := c.r.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				select {
				case reason := <-c.forced:
					c.startClose(newError(wire.ConnectionForced, "%s", reason))
					continue
				default:
				}
				if c.closing {
					return errors.New("no connection.close-ok within " + closeTimeout.String())
				}
				return errors.New("missed heartbeats from client, timeout: " + (2 * c.heartbeat).String())
			}
			var we *wire.Error
			if errors.As(err, &we) {
				// The stream is out of step: say why, then hang up
				// without waiting for a close-ok we could not parse.
				e := asAMQPError(we, nil)
				c.out.writeMethod(0, &wire.ConnectionClose{ReplyCode: e.code, ReplyText: e.text, ClassID: e.classID, MethodID: e.methodID})
				return err
			}
			return err
		}
		done, err := c.handleFrame(f)
		if err != nil {
			e := asAMQPError(err, nil)
			if c.closing {
				return e
			}
			c.startClose(e)
			continue
		}
		if done {
			return nil
		}
	}
}

// setReadDeadline arms the heartbeat timeout for the next read: two missed
// heartbeats, as RabbitMQ. While closing, only closeTimeout is allowed.
func (c *conn) setReadDeadline() error {
	var d time.Time
	switch {
	case c.closing:
		return nil // armed once by startClose
	case c.heartbeat > 0:
		d = time.Now().Add(2 * c.heartbeat)
	}
	select {
	case reason := <-c.forced:
		c.startClose(newError(wire.ConnectionForced, "%s", reason))
		return nil
	default:
	}
	return c.nc.SetReadDeadline(d)
}

// startClose sends connection.close for e and puts the connection in the
// closing state, where it waits for close-ok.
func (c *conn) startClose(e *amqpError) {
	if c.closing {
		return
	}
	c.closing = true
	c.srv.log.Debug("amqp: closing connection", "peer", c.name, "code", e.code, "text", e.text)
	c.out.writeMethod(0, &wire.ConnectionClose{ReplyCode: e.code, ReplyText: e.text, ClassID: e.classID, MethodID: e.methodID})
	c.teardown()
	c.nc.SetReadDeadline(time.Now().Add(closeTimeout))
}

// handleFrame dispatches one frame. done is true when the connection has
// closed cleanly. A returned error is a connection error.
func (c *conn) handleFrame(f wire.Frame) (done bool, err error) {
	if f.Type == wire.FrameHeartbeat {
		if f.Channel != 0 {
			return false, newError(wire.FrameError, "heartbeat frame on channel %d", f.Channel)
		}
		return false, nil
	}
	if f.Channel == 0 {
		if f.Type != wire.FrameMethod {
			return false, newError(wire.CommandInvalid, "content frame on channel 0")
		}
		return c.handleConnectionMethod(f.Payload)
	}
	if c.closing {
		return false, nil // only channel 0 matters now
	}
	if f.Channel > c.channelMax {
		return false, newError(wire.NotAllowed, "channel %d exceeds negotiated channel_max %d", f.Channel, c.channelMax)
	}
	ch := c.channels[f.Channel]
	if ch == nil {
		if f.Type != wire.FrameMethod {
			return false, newError(wire.ChannelError, "expected 'channel.open' on channel %d", f.Channel)
		}
		m, err := wire.DecodeMethod(f.Payload)
		if err != nil {
			return false, err
		}
		if _, ok := m.(*wire.ChannelOpen); !ok {
			return false, &amqpError{code: wire.ChannelError, text: "CHANNEL_ERROR - expected 'channel.open'"}
		}
		if err := c.access.OpenChannel(); err != nil {
			return false, err
		}
		ch := newChannel(c, f.Channel)
		c.channels[f.Channel] = ch
		c.listedChans.add(ch)
		c.out.writeMethod(f.Channel, &wire.ChannelOpenOk{})
		return false, nil
	}
	return false, ch.handleFrame(f)
}

func (c *conn) handleConnectionMethod(payload []byte) (done bool, err error) {
	m, err := wire.DecodeMethod(payload)
	if err != nil {
		return false, err
	}
	switch m := m.(type) {
	case *wire.ConnectionClose:
		c.out.writeMethod(0, &wire.ConnectionCloseOk{})
		c.peerClosing = true
		if !c.closing {
			c.srv.log.Debug("amqp: client closed connection", "peer", c.name, "code", m.ReplyCode, "text", m.ReplyText)
		}
		return true, nil
	case *wire.ConnectionCloseOk:
		return true, nil
	case *wire.ConnectionUpdateSecret:
		// Secrets are for token-based auth backends, which ferrymq has not
		// got: accept, as RabbitMQ does for a backend that ignores them.
		if !c.closing {
			c.out.writeMethod(0, &wire.ConnectionUpdateSecretOk{})
		}
		return false, nil
	}
	if c.closing {
		return false, nil
	}
	cid, mid := m.ID()
	return false, &amqpError{code: wire.CommandInvalid, text: "COMMAND_INVALID - unexpected " + wire.MethodName(cid, mid) + " on channel 0", classID: cid, methodID: mid}
}

// notifyBlocked and notifyUnblocked tell a client that announced the
// capability about a resource alarm (core.Broker.Block).
func (c *conn) notifyBlocked(reason string) {
	if c.capBlocked {
		c.out.writeMethod(0, &wire.ConnectionBlocked{Reason: reason})
	}
}

func (c *conn) notifyUnblocked() {
	if c.capBlocked {
		c.out.writeMethod(0, &wire.ConnectionUnblocked{})
	}
}

// waitUnblocked holds the reader while the server is blocked (it is about
// to route a publish). It returns false if the connection is being closed.
func (c *conn) waitUnblocked() bool {
	ch, _ := c.srv.broker.Blocked()
	if ch == nil {
		return true
	}
	c.flushConfirms()
	select {
	case <-ch:
		return true
	case reason := <-c.forced:
		c.startClose(newError(wire.ConnectionForced, "%s", reason))
		return false
	}
}

// flushConfirms sends the publisher confirms the channels accumulated in
// this read batch.
func (c *conn) flushConfirms() {
	for i, ch := range c.confirmDirty {
		ch.confirm.dirty = false
		ch.flushAcks()
		c.confirmDirty[i] = nil
	}
	c.confirmDirty = c.confirmDirty[:0]
}
