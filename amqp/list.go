package amqp

import (
	"crypto/tls"
	"sync"
	"sync/atomic"

	"github.com/ferrymq/ferrymq/core"
)

// listed is what a channel shows in the operations API besides what its
// mu guards: settings the reader changes rarely (basic.qos,
// confirm.select, tx.select), kept in atomics so that listing never
// touches the reader-owned fields.
type listed struct {
	prefetch, global atomic.Uint32
	confirm, tx      atomic.Bool
}

// chanList is the connection's channels as the operations API sees
// them: the reader adds and removes channels under mu (only on
// channel.open and close), ListChannels reads under it.
type chanList struct {
	mu  sync.Mutex
	chs map[uint16]*channel
}

func (l *chanList) add(ch *channel) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.chs == nil {
		l.chs = make(map[uint16]*channel)
	}
	l.chs[ch.id] = ch
}

func (l *chanList) remove(ch *channel) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.chs[ch.id] == ch {
		delete(l.chs, ch.id)
	}
}

// listChannels implements core.ConnInfo.ListChannels. Lock order:
// chanList.mu, then each channel's mu (never a queue lock).
func (c *conn) listChannels() []core.ChannelInfo {
	c.listedChans.mu.Lock()
	defer c.listedChans.mu.Unlock()
	out := make([]core.ChannelInfo, 0, len(c.listedChans.chs))
	for _, ch := range c.listedChans.chs {
		info := core.ChannelInfo{
			Number:         ch.id,
			PrefetchCount:  ch.listed.prefetch.Load(),
			GlobalPrefetch: ch.listed.global.Load(),
			Confirm:        ch.listed.confirm.Load(),
			Transactional:  ch.listed.tx.Load(),
		}
		ch.mu.Lock()
		info.Unacked = ch.unacked.len()
		info.Consumers = len(ch.consumers)
		for _, s := range ch.consumers {
			if s.cons == nil {
				continue
			}
			info.ConsumerList = append(info.ConsumerList, core.ConsumerInfo{
				Tag: s.tag, Queue: s.cons.Queue().Name(), AckRequired: !s.noAck,
				Prefetch: s.prefetch, Exclusive: s.exclusive, Arguments: s.args,
			})
		}
		ch.mu.Unlock()
		out = append(out, info)
	}
	return out
}

// connInfo is what the connection registers in core once it is open.
func (c *conn) connInfo(props core.Table) core.ConnInfo {
	_, isTLS := c.nc.(*tls.Conn)
	return core.ConnInfo{
		Name:             core.ConnName(c.name, c.nc.LocalAddr().String()),
		Protocol:         core.ProtocolAMQP091,
		Peer:             c.name,
		Local:            c.nc.LocalAddr().String(),
		TLS:              isTLS,
		ConnectedAt:      c.started,
		ClientProperties: props,
		Close:            c.forceClose,
		ListChannels:     c.listChannels,
	}
}
