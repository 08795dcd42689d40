package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Issue 15's memory bounds, measured on a ferrymq of ferrybench's own
// (--edge-bin, with --broker-args), whose RSS is sampled from /proc:
//
//   - mem-transient-flood: an AMQP publisher floods a queue without
//     consumers with transient messages (--messages, default 3 GiB of
//     bodies) against --memory-limit 512MiB; the broker must block it
//     (connection.blocked) and its peak RSS stay under --max-rss (default
//     twice the limit).
//   - mqtt-stalled-subscriber: an MQTT subscriber (persistent session,
//     QoS 0) stops reading while a publisher floods its topic with 1 KiB
//     QoS 0 messages for --duration (60 s); the broker keeps at most
//     max_queued_messages for it, drops the rest, and its peak RSS must
//     stay under --max-rss (default 512 MiB).

// memFloodLimit is the --memory-limit mem-transient-flood starts its
// broker with, unless --broker-args gives another.
const memFloodLimit = "512MiB"

// startOwnFerrymq starts the ferrymq under test for a memory scenario in a
// temporary directory, with args then --broker-args, and a sampler of its
// RSS and CPU. stop ends both and removes the directory.
func startOwnFerrymq(ctx context.Context, r *run, args ...string) (b *brokerProc, s *sampler, stop func(), err error) {
	dir, err := os.MkdirTemp("", "ferrybench-mem-")
	if err != nil {
		return nil, nil, nil, err
	}
	args = append(append([]string{"--http-listen", ""}, args...), strings.Fields(r.cfg.brokerArgs)...)
	b, err = startFerrymq(ctx, r.cfg.edgeBin, dir, args...)
	if err != nil {
		os.RemoveAll(dir)
		return nil, nil, nil, err
	}
	s = startSampler(b.pid)
	return b, s, func() {
		b.stop(10 * time.Second)
		os.RemoveAll(dir)
	}, nil
}

// finishRSS records the sampler's figures and fails the run if the peak
// passed bound (MiB).
func finishRSS(r *run, res *result, s *sampler, boundMiB int64) {
	peak, last, cpu, err := s.finish()
	if err != nil {
		r.fail(fmt.Errorf("sampling the broker's /proc: %w", err))
		return
	}
	res.RSSKiB, res.RSSEndKiB, res.CPUPct = peak, last, cpu
	if peak > boundMiB<<10 {
		r.fail(fmt.Errorf("broker RSS peaked at %d MiB, over the bound of %d MiB", peak>>10, boundMiB))
	}
}

func memTransientFlood(ctx context.Context, r *run, res *result) error {
	b, s, stop, err := startOwnFerrymq(ctx, r, "--memory-limit", memFloodLimit)
	if err != nil {
		return err
	}
	defer stop()
	limitMiB := int64(512)
	res.MemLimitMiB = limitMiB
	size := r.size
	total := r.cfg.messages
	if total == 0 {
		total = (3 << 30) / int64(size)
	}
	// A blocked publisher holds amqp091-go's write lock, which its
	// Connection.Close would wait for: the socket is closed instead.
	var raw net.Conn
	pubConn, err := amqp.DialConfig(b.amqpURL, amqp.Config{Dial: func(network, addr string) (net.Conn, error) {
		c, err := net.DialTimeout(network, addr, 10*time.Second)
		raw = c
		return c, err
	}})
	if err != nil {
		return err
	}
	defer raw.Close()
	blocked := pubConn.NotifyBlocked(make(chan amqp.Blocking, 4))
	ch, err := pubConn.Channel()
	if err != nil {
		return err
	}
	if _, err := ch.QueueDeclare(r.id, false, false, false, false, nil); err != nil {
		return err
	}
	adminConn, err := amqp.Dial(b.amqpURL)
	if err != nil {
		return err
	}
	defer adminConn.Close()
	admin, err := adminConn.Channel()
	if err != nil {
		return err
	}

	r.addPublishers(1)
	var sent atomic.Int64
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		body := make([]byte, size)
		for sent.Load() < total {
			if err := ch.PublishWithContext(ctx, "", r.id, false, false, amqp.Publishing{Body: body}); err != nil {
				done <- err
				return
			}
			sent.Add(1)
		}
		done <- nil
	}()
	// Hold: once blocked, watch the broker for this long before ending.
	const hold = 10 * time.Second
	var blockedAt time.Time
	var holdUntil <-chan time.Time
	deadline := time.After(max(r.cfg.duration, 2*time.Minute))
	stopProgress := r.everySecond(func(elapsed, _ time.Duration) string {
		return fmt.Sprintf("%s: %.0fs, %d MiB published", r.label(), elapsed.Seconds(), sent.Load()*int64(size)>>20)
	})
	defer stopProgress()
wait:
	for {
		select {
		case bl := <-blocked:
			if bl.Active && blockedAt.IsZero() {
				blockedAt = time.Now()
				holdUntil = time.After(hold)
				q, err := admin.QueueDeclarePassive(r.id, false, false, false, false, nil)
				if err == nil {
					res.BlockedAtMiB = float64(int64(q.Messages)*int64(size)) / (1 << 20)
				}
			}
		case err := <-done:
			if err != nil {
				return fmt.Errorf("publishing: %w", err)
			}
			break wait
		case <-holdUntil:
			break wait
		case <-deadline:
			break wait
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	res.Published = sent.Load()
	res.Seconds = time.Since(start).Seconds()
	res.PubPerSec = float64(res.Published) / res.Seconds
	bound := 2 * limitMiB
	if r.cfg.maxRSSMiB > 0 {
		bound = int64(r.cfg.maxRSSMiB)
	}
	finishRSS(r, res, s, bound)
	if blockedAt.IsZero() {
		r.fail(fmt.Errorf("published %d MiB of transient messages without connection.blocked", res.Published*int64(size)>>20))
	}
	r.closing.Store(true)
	return nil
}

func mqttStalledSubscriber(ctx context.Context, r *run, res *result) error {
	b, s, stop, err := startOwnFerrymq(ctx, r)
	if err != nil {
		return err
	}
	defer stop()
	addr := strings.TrimPrefix(b.mqttURL, "tcp://")
	topic := r.topic()

	// The subscriber: a persistent session (clean session 0) subscribed at
	// QoS 0, which never reads after its SUBACK. The broker disconnects
	// it once a write has been stuck for 15 s; its session queue stays.
	sub, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer sub.Close()
	con := mqttConnectPacket(4, r.id+"-stalled", 0, mqttTarget{})
	clearCleanSession(con)
	subscribe := mqttPacket(0x82, []byte{0, 1}, mqttString(topic), []byte{0})
	if _, err := sub.Write(append(con, subscribe...)); err != nil {
		return err
	}
	br := bufio.NewReader(sub)
	sub.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, want := range []byte{0x20, 0x90} {
		first, body, err := readMQTTPacket(br)
		if err != nil {
			return fmt.Errorf("subscriber: %w", err)
		}
		if first != want || (want == 0x20 && (len(body) < 2 || body[1] != 0)) {
			return fmt.Errorf("subscriber: got packet %#x % x, want %#x", first, body, want)
		}
	}

	// The publisher: raw QoS 0 PUBLISHes of r.size bytes, as fast as the
	// broker reads them, for --duration.
	pub, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer pub.Close()
	if _, err := pub.Write(mqttConnectPacket(4, r.id+"-flood", 0, mqttTarget{})); err != nil {
		return err
	}
	pub.SetReadDeadline(time.Now().Add(10 * time.Second))
	if first, _, err := readMQTTPacket(bufio.NewReader(pub)); err != nil || first != 0x20 {
		return fmt.Errorf("publisher: no CONNACK (%#x, %v)", first, err)
	}
	one := mqttPacket(0x30, mqttString(topic), make([]byte, r.size))
	batch := make([]byte, 0, 64*len(one))
	for range 64 {
		batch = append(batch, one...)
	}
	r.addPublishers(1)
	var sent atomic.Int64
	stopProgress := r.everySecond(func(elapsed, _ time.Duration) string {
		return fmt.Sprintf("%s: %.0fs, %d messages published to a stalled subscriber", r.label(), elapsed.Seconds(), sent.Load())
	})
	defer stopProgress()
	d := r.cfg.duration
	if d <= 0 {
		d = time.Minute
	}
	start := time.Now()
	end := start.Add(d)
	for time.Now().Before(end) && ctx.Err() == nil {
		pub.SetWriteDeadline(end)
		if _, err := pub.Write(batch); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			return fmt.Errorf("publisher: %w", err)
		}
		sent.Add(64)
	}
	res.Published = sent.Load()
	res.Seconds = time.Since(start).Seconds()
	res.PubPerSec = float64(res.Published) / res.Seconds
	bound := int64(512)
	if r.cfg.maxRSSMiB > 0 {
		bound = int64(r.cfg.maxRSSMiB)
	}
	finishRSS(r, res, s, bound)
	return nil
}

// clearCleanSession turns a CONNECT from mqttConnectPacket into one for a
// persistent session.
func clearCleanSession(pkt []byte) {
	i := 1
	for pkt[i]&0x80 != 0 {
		i++
	}
	// After the remaining length: protocol name (6 bytes), level, flags.
	pkt[i+1+7] &^= 0x02
}

// mqttString is an MQTT UTF-8 string: a two-byte length, then s.
func mqttString(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

// mqttPacket is a packet of type and flags first, with parts as its body.
func mqttPacket(first byte, parts ...[]byte) []byte {
	var body []byte
	for _, p := range parts {
		body = append(body, p...)
	}
	pkt := []byte{first}
	for n := len(body); ; {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		pkt = append(pkt, b)
		if n == 0 {
			break
		}
	}
	return append(pkt, body...)
}
