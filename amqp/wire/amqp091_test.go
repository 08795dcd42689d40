package wire

import (
	"bytes"
	"context"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/ferrymq/ferrymq/core"
	amqp "github.com/rabbitmq/amqp091-go"
)

// amqp091-go exports no frame writer or reader, so the cross-check plays a
// scripted server over net.Pipe to a real amqp091-go client: what the client
// writes is decoded with this package, and what this package writes must be
// understood by the client.

type fakeServer struct {
	t    *testing.T
	conn net.Conn
	r    *Reader
}

func (s *fakeServer) send(b []byte) {
	s.t.Helper()
	if _, err := s.conn.Write(b); err != nil {
		s.t.Fatalf("write: %v", err)
	}
}

// frame returns the next frame other than a heartbeat, with its payload
// copied.
func (s *fakeServer) frame() Frame {
	s.t.Helper()
	for {
		f, err := s.r.ReadFrame()
		if err != nil {
			s.t.Fatalf("read frame: %v", err)
		}
		if f.Type != FrameHeartbeat {
			f.Payload = append([]byte{}, f.Payload...)
			return f
		}
	}
}

// method reads a method frame on channel and checks that re-encoding the
// decoded method gives back the client's bytes when exact is set (it cannot
// be for tables of several keys: amqp091-go writes them in map order).
func (s *fakeServer) method(channel uint16, exact bool) Method {
	s.t.Helper()
	f := s.frame()
	if f.Type != FrameMethod || f.Channel != channel {
		s.t.Fatalf("got frame type %d on channel %d, want a method on %d", f.Type, f.Channel, channel)
	}
	m, err := DecodeMethod(f.Payload)
	if err != nil {
		s.t.Fatalf("decode %x: %v", f.Payload, err)
	}
	if exact && !bytes.Equal(AppendMethod(nil, m), f.Payload) {
		s.t.Fatalf("%s does not re-encode byte-exact", MethodName(m.ID()))
	}
	return m
}

// fromClient converts amqp091-go's table value types to core's.
func fromClient(v any) any {
	switch v := v.(type) {
	case amqp.Table:
		t := core.Table{}
		for k, e := range v {
			t[k] = fromClient(e)
		}
		return t
	case []any:
		a := make([]any, len(v))
		for i, e := range v {
			a[i] = fromClient(e)
		}
		return a
	case amqp.Decimal:
		return core.Decimal{Scale: v.Scale, Value: v.Value}
	case time.Time:
		return v.UTC()
	}
	return v
}

func TestAMQP091Client(t *testing.T) {
	srvConn, cliConn := net.Pipe()
	defer srvConn.Close()
	srvConn.SetDeadline(time.Now().Add(20 * time.Second))
	s := &fakeServer{t: t, conn: srvConn, r: NewReader(srvConn)}

	type opened struct {
		c   *amqp.Connection
		err error
	}
	openc := make(chan opened, 1)
	go func() {
		c, err := amqp.Open(cliConn, amqp.Config{
			SASL:       []amqp.Authentication{&amqp.PlainAuth{Username: "guest", Password: "guest"}},
			Vhost:      "/",
			FrameSize:  FrameMinSize,
			Properties: amqp.Table{"connection_name": "interop"},
			Locale:     "en_US",
		})
		openc <- opened{c, err}
	}()

	// Handshake.
	if h, err := s.r.ReadProtocolHeader(); err != nil || string(h[:]) != ProtocolHeader {
		t.Fatalf("protocol header %q, %v", h, err)
	}
	s.send(AppendMethodFrame(nil, 0, &ConnectionStart{VersionMajor: 0, VersionMinor: 9,
		ServerProperties: core.Table{
			"product":      "ferrymq",
			"capabilities": core.Table{"publisher_confirms": true, "basic.nack": true, "consumer_cancel_notify": true},
		},
		Mechanisms: "PLAIN AMQPLAIN", Locales: "en_US"}))
	startOk := s.method(0, false).(*ConnectionStartOk)
	if startOk.Mechanism != "PLAIN" || startOk.Response != "\x00guest\x00guest" || startOk.Locale != "en_US" {
		t.Fatalf("start-ok %+v", startOk)
	}
	if startOk.ClientProperties["connection_name"] != "interop" {
		t.Fatalf("client properties %v", startOk.ClientProperties)
	}
	if caps, _ := startOk.ClientProperties["capabilities"].(core.Table); caps["publisher_confirms"] != true {
		t.Fatalf("client capabilities %v", startOk.ClientProperties["capabilities"])
	}
	s.send(AppendMethodFrame(nil, 0, &ConnectionTune{ChannelMax: 16, FrameMax: FrameMinSize, Heartbeat: 0}))
	if tuneOk := s.method(0, true).(*ConnectionTuneOk); tuneOk.FrameMax != FrameMinSize || tuneOk.ChannelMax != 16 {
		t.Fatalf("tune-ok %+v", tuneOk)
	}
	if open := s.method(0, true).(*ConnectionOpen); open.VirtualHost != "/" {
		t.Fatalf("open %+v", open)
	}
	s.send(AppendMethodFrame(nil, 0, &ConnectionOpenOk{}))
	o := <-openc
	if o.err != nil {
		t.Fatal(o.err)
	}
	conn := o.c

	// call runs a blocking client call while the server answers it.
	call := func(f func() error) chan error {
		c := make(chan error, 1)
		go func() { c <- f() }()
		return c
	}
	wait := func(c chan error) {
		t.Helper()
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}

	var ch *amqp.Channel
	done := call(func() (err error) { ch, err = conn.Channel(); return err })
	s.method(1, true)
	s.send(AppendMethodFrame(nil, 1, &ChannelOpenOk{}))
	wait(done)

	// A table with every type amqp091-go writes.
	args := amqp.Table{
		"bool": true, "byte": byte(0xFE), "int8": int8(-2), "int16": int16(-300), "int": 7,
		"int32": int32(-5), "int64": int64(-1 << 40), "uint16": uint16(65000), "uint32": uint32(4000000000),
		"float32": float32(-1.25), "float64": 3.5, "decimal": amqp.Decimal{Scale: 2, Value: -12345},
		"string": "s", "bytes": []byte{0, 1, 2}, "array": []any{int32(1), "two", nil},
		"time": time.Unix(1700000000, 0), "table": amqp.Table{"inner": true}, "void": nil,
	}
	done = call(func() error { return ch.ExchangeDeclare("logs", "topic", true, false, false, false, args) })
	decl := s.method(1, false).(*ExchangeDeclare)
	wantArgs := fromClient(args).(core.Table)
	wantArgs["int"] = int32(7) // amqp091-go writes int as 'I'
	if decl.Exchange != "logs" || decl.Type != "topic" || !decl.Durable || decl.NoWait || decl.AutoDelete {
		t.Fatalf("exchange.declare %+v", decl)
	}
	if !reflect.DeepEqual(decl.Arguments, wantArgs) {
		t.Fatalf("arguments\n%#v\nwant\n%#v", decl.Arguments, wantArgs)
	}
	s.send(AppendMethodFrame(nil, 1, &ExchangeDeclareOk{}))
	wait(done)

	// Publish: method, header with every property amqp091-go sends, and a
	// body split at frame-max.
	body := bytes.Repeat([]byte("abcdefghij"), 1000)
	pub := amqp.Publishing{
		Headers: amqp.Table{"x-key": "v"}, ContentType: "text/plain", ContentEncoding: "utf-8",
		DeliveryMode: 2, Priority: 3, CorrelationId: "c", ReplyTo: "r", Expiration: "1000", MessageId: "m",
		Timestamp: time.Unix(1700000002, 0), Type: "t", UserId: "guest", AppId: "a", Body: body,
	}
	done = call(func() error {
		return ch.PublishWithContext(context.Background(), "logs", "a.b", true, false, pub)
	})
	if p := s.method(1, true).(*BasicPublish); p.Exchange != "logs" || p.RoutingKey != "a.b" || !p.Mandatory || p.Immediate {
		t.Fatalf("basic.publish %+v", p)
	}
	hf := s.frame()
	classID, size, props, err := DecodeContentHeader(hf.Payload)
	if err != nil || hf.Type != FrameHeader || classID != ClassBasic || size != uint64(len(body)) {
		t.Fatalf("header %d %d %d %v", hf.Type, classID, size, err)
	}
	if !bytes.Equal(AppendContentHeader(nil, classID, size, &props), hf.Payload) {
		t.Fatal("content header does not re-encode byte-exact")
	}
	wantProps := core.Properties{Headers: core.Table{"x-key": "v"}, ContentType: "text/plain", ContentEncoding: "utf-8",
		DeliveryMode: 2, Priority: 3, CorrelationID: "c", ReplyTo: "r", Expiration: "1000", MessageID: "m",
		Timestamp: ts(1700000002), Type: "t", UserID: "guest", AppID: "a", Flags: 0xFFF8}
	if !reflect.DeepEqual(props, wantProps) {
		t.Fatalf("properties\n%#v\nwant\n%#v", props, wantProps)
	}
	var got []byte
	for len(got) < len(body) {
		f := s.frame()
		if f.Type != FrameBody || len(f.Payload) > FrameMinSize-FrameOverhead {
			t.Fatalf("body frame type %d of %d bytes", f.Type, len(f.Payload))
		}
		got = append(got, f.Payload...)
	}
	if !bytes.Equal(got, body) {
		t.Fatal("body differs")
	}
	wait(done)

	// Consume, then deliver with AppendDeliver: the client must read every
	// property, every table type and the split body.
	var deliveries <-chan amqp.Delivery
	done = call(func() (err error) {
		deliveries, err = ch.Consume("q", "ctag", false, false, false, false, nil)
		return err
	})
	if c := s.method(1, true).(*BasicConsume); c.Queue != "q" || c.ConsumerTag != "ctag" {
		t.Fatalf("basic.consume %+v", c)
	}
	s.send(AppendMethodFrame(nil, 1, &BasicConsumeOk{ConsumerTag: "ctag"}))
	wait(done)

	dprops := allProps
	dprops.Headers = allTypesTable
	go s.send(AppendDeliver(nil, 1, "ctag", 7, true, "logs", "a.b", &dprops, body, FrameMinSize))
	var d amqp.Delivery
	select {
	case d = <-deliveries:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
	}
	if d.ConsumerTag != "ctag" || d.DeliveryTag != 7 || !d.Redelivered || d.Exchange != "logs" || d.RoutingKey != "a.b" {
		t.Fatalf("delivery %+v", d)
	}
	if d.ContentType != dprops.ContentType || d.ContentEncoding != dprops.ContentEncoding ||
		d.DeliveryMode != 2 || d.Priority != 9 || d.CorrelationId != dprops.CorrelationID ||
		d.ReplyTo != dprops.ReplyTo || d.Expiration != dprops.Expiration || d.MessageId != dprops.MessageID ||
		!d.Timestamp.Equal(dprops.Timestamp) || d.Type != dprops.Type || d.UserId != dprops.UserID || d.AppId != dprops.AppID {
		t.Fatalf("delivery properties %+v", d)
	}
	if h := fromClient(d.Headers); !reflect.DeepEqual(h, allTypesTable) {
		t.Fatalf("delivery headers\n%#v\nwant\n%#v", h, allTypesTable)
	}
	if !bytes.Equal(d.Body, body) {
		t.Fatal("delivery body differs")
	}

	// Acknowledgements.
	done = call(func() error { return d.Ack(true) })
	if a := s.method(1, true).(*BasicAck); a.DeliveryTag != 7 || !a.Multiple {
		t.Fatalf("basic.ack %+v", a)
	}
	wait(done)
	done = call(func() error { return d.Nack(false, true) })
	if n := s.method(1, true).(*BasicNack); n.DeliveryTag != 7 || n.Multiple || !n.Requeue {
		t.Fatalf("basic.nack %+v", n)
	}
	wait(done)

	// Client-initiated connection.close and its close-ok.
	done = call(conn.Close)
	if c := s.method(0, true).(*ConnectionClose); c.ReplyCode != ReplySuccess {
		t.Fatalf("connection.close %+v", c)
	}
	s.send(AppendMethodFrame(nil, 0, &ConnectionCloseOk{}))
	wait(done)
}
