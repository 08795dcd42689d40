package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

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

// idleTimeout bounds the TCP handshake and the wait for the CONNACK of
// each idle connection.
const idleTimeout = 30 * time.Second

// idleSettle is how long idle-mqtt-conns waits after the last CONNACK
// before it reads the broker's RSS.
var idleSettle = 3 * time.Second

// idleConn opens one MQTT connection with d to addr and waits for a
// successful CONNACK. Its errors say which step failed and the likely
// cause.
func idleConn(d *net.Dialer, addr string, t mqttTarget, version int, clientID string) (net.Conn, error) {
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, explainDial(err)
	}
	if t.tls != nil {
		if c, err = tlsHandshake(c, addr, t.tls); err != nil {
			return nil, err
		}
	}
	_ = c.SetDeadline(time.Now().Add(idleTimeout))
	if _, err := c.Write(mqttConnectPacket(version, clientID, 600, t)); err != nil {
		c.Close()
		if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
			return nil, explainCONNACK(err)
		}
		return nil, fmt.Errorf("writing CONNECT: %w", err)
	}
	typ, body, err := readMQTTPacket(bufio.NewReaderSize(c, 64))
	if err != nil {
		c.Close()
		return nil, explainCONNACK(err)
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

// explainDial adds the likely cause to a failed connect.
func explainDial(err error) error {
	var ne net.Error
	var se *os.SyscallError
	switch {
	case errors.As(err, &se) && se.Syscall == "bind":
		return fmt.Errorf("%w (cannot use this source address: on Linux every 127.x.y.z address is local)", err)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("%w (no free ephemeral port for this source address: net.ipv4.ip_local_port_range has %d)", err, ephemeralPorts())
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		lim, _ := procNoFile(os.Getpid())
		return fmt.Errorf("%w (ferrybench may open %d files: raise the hard limit, ulimit -Hn)", err, lim)
	case errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("%w (the broker reset the connection as it was made: a connection limit? out of file descriptors? see its log)", err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w (nothing listens there: did the broker exit?)", err)
	case errors.As(err, &ne) && ne.Timeout():
		somax, _ := readUintFile("/proc/sys/net/core/somaxconn")
		return fmt.Errorf("%w (no TCP handshake within %s: the broker is not accepting and its listen backlog, at most net.core.somaxconn = %d, is full)", err, idleTimeout, somax)
	}
	return err
}

// explainCONNACK adds the likely cause to a failed wait for the CONNACK.
func explainCONNACK(err error) error {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("no CONNACK within %s after the TCP handshake: the broker did not accept or did not answer the connection (out of file descriptors? see its log): %w", idleTimeout, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("the broker closed the connection before its CONNACK (a connection limit? out of file descriptors? see its log): %w", err)
	}
	return fmt.Errorf("reading CONNACK: %w", err)
}

// idleMQTT opens cfg.conns MQTT connections that then stay idle, and
// reports how much the broker's RSS grew per connection. When a connection
// fails it stops opening more and still measures the RSS per connection
// opened, but the run fails: its error says how many opened, and which
// connection failed and why.
func idleMQTT(ctx context.Context, r *run, res *result) error {
	n := r.cfg.conns
	res.Conns = n
	lim, err := raiseNoFile(uint64(n) + 64)
	if err != nil {
		return fmt.Errorf("raising RLIMIT_NOFILE: %w", err)
	}
	if uint64(n)+64 > lim.soft {
		why := ""
		if lim.hardErr != nil {
			why = ": " + lim.hardErr.Error()
		}
		return fmt.Errorf("--conns %d needs %d file descriptors; ferrybench may open %d%s", n, n+64, lim.soft, why)
	}
	t, err := parseMQTTURL(r.cfg.mqttURL)
	if err != nil {
		return err
	}
	if t.secure {
		t.tls = r.cfg.tlsConfig
	}
	plan, err := newDialPlan(t.addr, n)
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
		res.RSSBeforeKiB = before.rssKiB
		// A broker that may not open n sockets fails late and obscurely
		// (a connection it never accepts gets no CONNACK); say it now.
		if bl, err := procNoFile(r.cfg.pid); err == nil {
			res.BrokerNoFile = int64(min(bl, 1<<40))
			if uint64(n) > bl {
				return fmt.Errorf("the broker (pid %d) may open only %d files (Max open files in /proc/%d/limits), fewer than --conns %d: start it with a higher limit (ulimit -n; ferrybench --orchestrate raises its own, which the brokers it starts inherit)", r.cfg.pid, bl, r.cfg.pid, n)
			}
		}
	}
	self := startSampler(0)
	sys0, sysAt, _ := systemBusy()
	var broker *sampler
	if r.cfg.pid > 0 {
		broker = startSampler(r.cfg.pid)
	}

	conns := make([]net.Conn, n)
	var opened, failed atomic.Int64
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
				d := plan.dialer(i)
				c, err := idleConn(d, plan.addr, t, r.cfg.mqttVersion, fmt.Sprintf("%s-%d", r.id, i))
				if err != nil {
					failed.Add(1)
					once.Do(func() {
						from := "the kernel's choice of source address"
						if d.LocalAddr != nil {
							from = d.LocalAddr.(*net.TCPAddr).IP.String()
						}
						firstErr = fmt.Errorf("connection %d (from %s to %s) after %.1fs: %w", i, from, plan.addr, time.Since(start).Seconds(), err)
					})
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
	got := opened.Load()
	res.Published = got
	res.Opened = got
	res.OpenSeconds = connectTime.Seconds()
	res.MsgPerSec = float64(got) / connectTime.Seconds()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		more := ""
		if f := failed.Load(); f > 1 {
			more = fmt.Sprintf(" (%d more connections in flight failed too)", f-1)
		}
		firstErr = fmt.Errorf("opened %d of %d connections in %.1fs; %w%s", got, n, connectTime.Seconds(), firstErr, more)
		if got == 0 || ctx.Err() != nil {
			return firstErr
		}
		// Still measure the memory of the connections that opened.
	}
	// Let the broker settle (GC, lazily grown buffers), then read its RSS.
	time.Sleep(idleSettle)
	_, _, res.ClientCPUPct, _ = self.finish()
	if broker != nil {
		after, err := readProc(r.cfg.pid)
		if err != nil {
			return errors.Join(firstErr, fmt.Errorf("reading the broker's /proc: %w", err))
		}
		res.RSSKiB, _, res.CPUPct, _ = broker.finish()
		res.RSSEndKiB = after.rssKiB
		res.RSSPerConnKiB = float64(after.rssKiB-before.rssKiB) / float64(got)
	}
	res.OtherCPUPct = otherCPU(busySince(sys0, sysAt), res)
	res.Seconds = time.Since(start).Seconds()
	return firstErr
}
