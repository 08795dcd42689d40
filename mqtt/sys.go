package mqtt

import (
	"context"
	"fmt"
	"math"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt/topic"
)

// $SYS topics, as Mosquitto publishes them: every Config.SysInterval the
// broker's figures go to $SYS/broker/..., retained, QoS 0, each only when
// its value changed (uptime always); a new $SYS subscription gets the
// latest values at once, as retained messages.
//
// They travel through core like any message, but on an exchange of their
// own (SysExchange, internal, declared in a vhost by its first $SYS
// subscription), so that an MQTT "#" subscriber [MQTT-4.7.2-1] or an AMQP
// consumer bound to amq.topic with "#" never sees them. Who may read
// them is decided at SUBSCRIBE, as for any topic: read permission on the
// subscription's queue and on the MQTT exchange, and topic read
// permission on the filter (a user whose topic permissions do not cover
// $SYS.broker.# gets a SUBACK refusal). The figures are the node's,
// whatever the vhost, as Mosquitto has none.

// SysExchange is the topic exchange, in each vhost with a $SYS
// subscription, that $SYS messages are published to.
const SysExchange = "mqtt.$SYS"

// isSysFilter reports whether a topic filter (without $share/<group>/)
// is a $SYS one: those bind to SysExchange.
func isSysFilter(filter string) bool {
	return filter == "$SYS" || strings.HasPrefix(filter, "$SYS/")
}

// exchangeFor is the exchange a subscription to filter binds to.
func (s *Server) exchangeFor(filter string) string {
	if isSysFilter(filter) {
		return SysExchange
	}
	return s.cfg.Exchange
}

// ensureSysExchange declares SysExchange in v unless it exists. It is
// durable, so that a persistent session's $SYS subscription survives a
// restart, and internal: only the broker publishes to it.
func ensureSysExchange(v *core.VHost) error {
	if v.HasExchange(SysExchange) {
		return nil
	}
	return v.DeclareExchange(core.ExchangeDecl{Name: SysExchange, Kind: "topic", Durable: true, Internal: true})
}

// clientStats are one connection's packet and byte counts. Each is
// written by the connection's own goroutines on its own cache line, and
// summed by the $SYS publisher.
type clientStats struct {
	pktIn, pubIn, bytesIn    atomic.Uint64
	pktOut, pubOut, bytesOut atomic.Uint64
}

func (a *clientStats) addTo(b *sysTotals) {
	b.pktIn += a.pktIn.Load()
	b.pubIn += a.pubIn.Load()
	b.bytesIn += a.bytesIn.Load()
	b.pktOut += a.pktOut.Load()
	b.pubOut += a.pubOut.Load()
	b.bytesOut += a.bytesOut.Load()
}

// sysTotals are the server's counts at one moment.
type sysTotals struct {
	pktIn, pubIn, bytesIn, pktOut, pubOut, bytesOut uint64
	accepted                                        uint64
}

// sysState is the $SYS publisher's; mu (a leaf) guards the maps, which
// subscriptions read for their retained replay.
type sysState struct {
	started time.Time
	// retired sums the counts of the connections that have ended; it
	// is added to under Server.mu, with the connection's removal.
	retired  sysTotals
	accepted atomic.Uint64 // connections accepted (load/connections)

	mu       sync.Mutex
	retained map[string]*core.Message // topic -> latest value
	last     map[string]string        // topic -> latest payload

	// Owned by the publisher goroutine.
	prev     sysTotals
	prevAt   time.Time
	loads    map[string]*[3]float64 // per load base topic: 1, 5, 15 min
	maxConns int
	maxHeap  uint64
}

func (st *sysState) init() {
	st.started = time.Now()
	st.retained = make(map[string]*core.Message)
	st.last = make(map[string]string)
	st.loads = make(map[string]*[3]float64)
}

// retire adds a finished connection's counts; Server.mu is held.
func (s *Server) retire(c *client) {
	c.stats.addTo(&s.sys.retired)
}

// sysMatching returns the latest $SYS messages whose topic matches filter.
func (s *Server) sysMatching(filter string) []*core.Message {
	s.sys.mu.Lock()
	defer s.sys.mu.Unlock()
	var out []*core.Message
	for name, m := range s.sys.retained {
		if topic.Match(filter, name) {
			out = append(out, m)
		}
	}
	return out
}

// sysLoop publishes the $SYS topics every interval until ctx ends.
func (s *Server) sysLoop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.publishSys(now)
		}
	}
}

// sample sums the counts of the live and the finished connections and
// counts the sessions, under Server.mu (atomic loads only).
func (s *Server) sample() (tot sysTotals, connected, disconnected int, live []*session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tot = s.sys.retired
	for c := range s.clients {
		c.stats.addTo(&tot)
	}
	for _, st := range s.sessions {
		if st.live != nil {
			connected++
			live = append(live, st.live)
		} else {
			disconnected++
		}
	}
	tot.accepted = s.sys.accepted.Load()
	return tot, connected, disconnected, live
}

// heapBytes reads the Go heap in use without stopping the world.
func heapBytes() uint64 {
	sm := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sm)
	if sm[0].Value.Kind() == metrics.KindUint64 {
		return sm[0].Value.Uint64()
	}
	return 0
}

// sysValues computes the $SYS topics and payloads at now.
func (s *Server) sysValues(now time.Time) [][2]string {
	tot, connected, disconnected, live := s.sample()
	subs := 0
	for _, ss := range live {
		ss.mu.Lock()
		for _, l := range ss.subs {
			subs += len(l)
		}
		ss.mu.Unlock()
	}
	s.retained.mu.Lock()
	retained := 0
	for _, m := range s.retained.vhosts {
		retained += len(m)
	}
	s.retained.mu.Unlock()
	var dropped uint64
	for _, vc := range s.broker.VHostCounters() {
		dropped += vc.Dropped[core.DropBacklog]
	}
	dropped += s.tooLarge.Load()

	st := &s.sys
	st.maxConns = max(st.maxConns, connected)
	heap := heapBytes()
	st.maxHeap = max(st.maxHeap, heap)
	u := func(n uint64) string { return strconv.FormatUint(n, 10) }
	i := func(n int) string { return strconv.Itoa(n) }
	vals := [][2]string{
		{"$SYS/broker/version", "ferrymq version " + s.cfg.Version},
		{"$SYS/broker/uptime", fmt.Sprintf("%d seconds", int64(now.Sub(st.started)/time.Second))},
		{"$SYS/broker/clients/connected", i(connected)},
		{"$SYS/broker/clients/active", i(connected)}, // Mosquitto's deprecated name
		{"$SYS/broker/clients/disconnected", i(disconnected)},
		{"$SYS/broker/clients/inactive", i(disconnected)},
		{"$SYS/broker/clients/total", i(connected + disconnected)},
		{"$SYS/broker/clients/maximum", i(st.maxConns)},
		{"$SYS/broker/messages/received", u(tot.pktIn)},
		{"$SYS/broker/messages/sent", u(tot.pktOut)},
		{"$SYS/broker/publish/messages/received", u(tot.pubIn)},
		{"$SYS/broker/publish/messages/sent", u(tot.pubOut)},
		{"$SYS/broker/publish/messages/dropped", u(dropped)},
		{"$SYS/broker/bytes/received", u(tot.bytesIn)},
		{"$SYS/broker/bytes/sent", u(tot.bytesOut)},
		{"$SYS/broker/subscriptions/count", i(subs)},
		{"$SYS/broker/retained messages/count", i(retained)},
		{"$SYS/broker/heap/current", u(heap)},
		{"$SYS/broker/heap/maximum", u(st.maxHeap)},
	}
	// Loads, as Mosquitto's calc_load: per-minute rates over the last
	// interval, smoothed exponentially over 1, 5 and 15 minutes.
	if !st.prevAt.IsZero() {
		dt := now.Sub(st.prevAt).Seconds()
		if dt > 0 {
			for _, l := range []struct {
				base      string
				now, prev uint64
			}{
				{"messages/received", tot.pktIn, st.prev.pktIn},
				{"messages/sent", tot.pktOut, st.prev.pktOut},
				{"publish/received", tot.pubIn, st.prev.pubIn},
				{"publish/sent", tot.pubOut, st.prev.pubOut},
				{"bytes/received", tot.bytesIn, st.prev.bytesIn},
				{"bytes/sent", tot.bytesOut, st.prev.bytesOut},
				{"connections", tot.accepted, st.prev.accepted},
				{"sockets", tot.accepted, st.prev.accepted},
			} {
				perMin := float64(l.now-l.prev) * 60 / dt
				ema := st.loads[l.base]
				if ema == nil {
					ema = &[3]float64{perMin, perMin, perMin}
					st.loads[l.base] = ema
				}
				for k, window := range []float64{60, 300, 900} {
					e := math.Exp(-dt / window)
					ema[k] = perMin + e*(ema[k]-perMin)
				}
				for k, name := range []string{"1min", "5min", "15min"} {
					vals = append(vals, [2]string{"$SYS/broker/load/" + l.base + "/" + name, strconv.FormatFloat(ema[k], 'f', 2, 64)})
				}
			}
		}
	}
	st.prev, st.prevAt = tot, now
	return vals
}

// publishSys publishes the $SYS values that changed since the last time
// to every vhost with a $SYS subscription, and keeps them for replay.
func (s *Server) publishSys(now time.Time) {
	var vhosts []*core.VHost
	for _, name := range s.broker.VHostNames() {
		if v := s.broker.VHost(name); v != nil && v.HasExchange(SysExchange) {
			vhosts = append(vhosts, v)
		}
	}
	if len(vhosts) == 0 && !s.sys.prevAt.IsZero() {
		// Nobody subscribes: spare the sums (every session's lock, every
		// queue's). The values kept for a first subscriber are at most
		// this old, and fresh from the next interval on.
		return
	}
	vals := s.sysValues(now)
	for _, kv := range vals {
		name, payload := kv[0], kv[1]
		s.sys.mu.Lock()
		changed := s.sys.last[name] != payload || name == "$SYS/broker/uptime"
		var msg *core.Message
		if changed {
			s.sys.last[name] = payload
			msg = sysMessage(name, payload, now)
			s.sys.retained[name] = msg
		}
		s.sys.mu.Unlock()
		if !changed {
			continue
		}
		for _, v := range vhosts {
			m := *msg // a message of its own per vhost: core owns it once published
			if _, err := v.PublishInternal(&m); err != nil {
				s.log.Debug("mqtt: $SYS publish failed", "vhost", v.Name(), "topic", name, "err", err)
			}
		}
	}
}

// sysMessage is a $SYS value as a core message: QoS 0, retained.
func sysMessage(name, payload string, now time.Time) *core.Message {
	return &core.Message{
		Exchange:   SysExchange,
		RoutingKey: topic.RoutingKey(name),
		Body:       []byte(payload),
		Published:  now,
		Properties: core.Properties{Headers: core.Table{hdrRetain: true}, Flags: core.FlagHeaders},
	}
}
