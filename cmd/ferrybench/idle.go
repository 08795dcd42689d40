package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// raiseNoFile raises this process's RLIMIT_NOFILE soft limit to the hard
// limit and returns the new soft limit.
func raiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}

// mqttConnectPacket encodes a CONNECT with clean session, the given keep
// alive and no will: protocol level 4 (3.1.1) or 5 (with an empty property
// list).
func mqttConnectPacket(version int, clientID string, keepAlive uint16, t mqttTarget) []byte {
	var vh []byte
	vh = append(vh, 0, 4, 'M', 'Q', 'T', 'T')
	flags := byte(0x02) // clean session / clean start
	if t.hasUser {
		flags |= 0x80
		if t.password != "" {
			flags |= 0x40
		}
	}
	level := byte(4)
	if version == 5 {
		level = 5
	}
	vh = append(vh, level, flags, byte(keepAlive>>8), byte(keepAlive))
	if version == 5 {
		vh = append(vh, 0) // no properties
	}
	str := func(b []byte, s string) []byte { return append(append(b, byte(len(s)>>8), byte(len(s))), s...) }
	vh = str(vh, clientID)
	if t.hasUser {
		vh = str(vh, t.user)
		if t.password != "" {
			vh = str(vh, t.password)
		}
	}
	pkt := []byte{0x10}
	for n := len(vh); ; {
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
	return append(pkt, vh...)
}

// readMQTTPacket reads one packet and returns its first byte and its body.
func readMQTTPacket(r *bufio.Reader) (byte, []byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("malformed remaining length")
		}
		mult *= 128
	}
	body := make([]byte, n)
	_, err = io.ReadFull(r, body)
	return first, body, err
}

// idleConn opens one MQTT connection and waits for a successful CONNACK.
// Loopback addresses above 20,000 connections use further 127.x source
// addresses, as one source address has about 28,000 ephemeral ports.
func idleConn(t mqttTarget, version int, clientID string, i int) (net.Conn, error) {
	d := net.Dialer{Timeout: 30 * time.Second}
	if host, _, err := net.SplitHostPort(t.addr); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() && ip.To4() != nil && i >= 20000 {
			d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, byte(i/20000/250), byte(1+i/20000%250))}
		}
	}
	c, err := d.Dial("tcp", t.addr)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(mqttConnectPacket(version, clientID, 600, t)); err != nil {
		c.Close()
		return nil, err
	}
	typ, body, err := readMQTTPacket(bufio.NewReaderSize(c, 64))
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("reading CONNACK: %w", err)
	}
	if typ>>4 != 2 || len(body) < 2 {
		c.Close()
		return nil, fmt.Errorf("expected CONNACK, got packet type %d", typ>>4)
	}
	if body[1] != 0 {
		c.Close()
		return nil, fmt.Errorf("CONNACK refused the connection: 0x%02x", body[1])
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// idleMQTT opens cfg.conns MQTT connections that then stay idle, and
// reports how much the broker's RSS grew per connection.
func idleMQTT(ctx context.Context, r *run, res *result) error {
	n := r.cfg.conns
	res.Conns = n
	limit, err := raiseNoFile()
	if err != nil {
		return fmt.Errorf("raising RLIMIT_NOFILE: %w", err)
	}
	if uint64(n)+64 > limit {
		return fmt.Errorf("--conns %d needs %d file descriptors; the limit is %d (raise the hard limit: ulimit -Hn)", n, n+64, limit)
	}
	t, err := parseMQTTURL(r.cfg.mqttURL)
	if err != nil {
		return err
	}
	if r.cfg.pid == 0 {
		r.warn("no --pid: RSS per connection not measured")
	}
	var before procStat
	if r.cfg.pid > 0 {
		if before, err = readProc(r.cfg.pid); err != nil {
			return fmt.Errorf("reading the broker's /proc: %w", err)
		}
	}
	self := startSampler(0)
	var broker *sampler
	if r.cfg.pid > 0 {
		broker = startSampler(r.cfg.pid)
	}

	conns := make([]net.Conn, n)
	var opened atomic.Int64
	r.progress = func() (int64, int64) { return opened.Load(), opened.Load() }
	stopProgress := r.startProgress()
	start := time.Now()
	r.pubStart = start.Sub(r.base)
	var next atomic.Int64
	var once sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				c, err := idleConn(t, r.cfg.mqttVersion, fmt.Sprintf("%s-%d", r.id, i), i)
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("connection %d: %w", i, err) })
					next.Store(int64(n)) // stop the others
					return
				}
				conns[i] = c
				opened.Add(1)
			}
		})
	}
	wg.Wait()
	connectTime := time.Since(start)
	stopProgress()
	defer func() {
		// DISCONNECT, so the broker drops the sessions without wills or
		// logging errors.
		for _, c := range conns {
			if c != nil {
				_, _ = c.Write([]byte{0xe0, 0})
				c.Close()
			}
		}
	}()
	res.Published = opened.Load()
	res.MsgPerSec = float64(opened.Load()) / connectTime.Seconds()
	if firstErr != nil {
		return fmt.Errorf("opened %d of %d connections: %w", opened.Load(), n, firstErr)
	}
	// Let the broker settle (GC, lazily grown buffers), then read its RSS.
	time.Sleep(3 * time.Second)
	_, _, res.ClientCPUPct, _ = self.finish()
	if broker != nil {
		after, err := readProc(r.cfg.pid)
		if err != nil {
			return fmt.Errorf("reading the broker's /proc: %w", err)
		}
		res.RSSKiB, _, res.CPUPct, _ = broker.finish()
		res.RSSEndKiB = after.rssKiB
		res.RSSPerConnKiB = float64(after.rssKiB-before.rssKiB) / float64(n)
	}
	res.Seconds = time.Since(start).Seconds()
	return nil
}
