package mgmt

import (
	"sync"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// sampleInterval is how often message rates are sampled: RabbitMQ's
// collect_statistics_interval.
const sampleInterval = 5 * time.Second

// counts are the message figures behind message_stats.
type counts struct {
	Publish, DeliverGet, Deliver, DeliverNoAck, Get, GetNoAck, GetEmpty, Ack, Redeliver float64
}

func fromCounters(publish uint64, c core.MessageCounters) counts {
	return counts{
		Publish: float64(publish), DeliverGet: float64(c.DeliverGet()), Deliver: float64(c.Delivered),
		DeliverNoAck: float64(c.DeliveredNoAck), Get: float64(c.Got), GetNoAck: float64(c.GotNoAck),
		GetEmpty: float64(c.GetEmpty), Ack: float64(c.Acked), Redeliver: float64(c.Redelivered),
	}
}

func (c counts) minus(o counts, secs float64) counts {
	d := func(a, b float64) float64 { return max(a-b, 0) / secs }
	return counts{
		d(c.Publish, o.Publish), d(c.DeliverGet, o.DeliverGet), d(c.Deliver, o.Deliver),
		d(c.DeliverNoAck, o.DeliverNoAck), d(c.Get, o.Get), d(c.GetNoAck, o.GetNoAck),
		d(c.GetEmpty, o.GetEmpty), d(c.Ack, o.Ack), d(c.Redeliver, o.Redeliver),
	}
}

func (c *counts) add(o counts) {
	c.Publish += o.Publish
	c.DeliverGet += o.DeliverGet
	c.Deliver += o.Deliver
	c.DeliverNoAck += o.DeliverNoAck
	c.Get += o.Get
	c.GetNoAck += o.GetNoAck
	c.GetEmpty += o.GetEmpty
	c.Ack += o.Ack
	c.Redeliver += o.Redeliver
}

// messageStats renders figures and rates as RabbitMQ's message_stats.
func messageStats(total, rate counts) map[string]any {
	m := make(map[string]any, 18)
	put := func(k string, v, r float64) {
		m[k] = uint64(v)
		m[k+"_details"] = map[string]any{"rate": r}
	}
	put("publish", total.Publish, rate.Publish)
	put("deliver_get", total.DeliverGet, rate.DeliverGet)
	put("deliver", total.Deliver, rate.Deliver)
	put("deliver_no_ack", total.DeliverNoAck, rate.DeliverNoAck)
	put("get", total.Get, rate.Get)
	put("get_no_ack", total.GetNoAck, rate.GetNoAck)
	put("get_empty", total.GetEmpty, rate.GetEmpty)
	put("ack", total.Ack, rate.Ack)
	put("redeliver", total.Redeliver, rate.Redeliver)
	return m
}

type qkey struct{ vhost, name string }

// rateState keeps the previous sample of every vhost's and queue's
// counters and the rates between the last two samples; a sampler
// goroutine refreshes it every sampleInterval.
type rateState struct {
	mu     sync.Mutex
	at     time.Time
	vhosts map[string]counts // last sample
	queues map[qkey]counts
	vRate  map[string]counts // rates over the last interval
	qRate  map[qkey]counts
}

// sample takes one sample of every counter and updates the rates.
func (s *Server) sample(now time.Time) {
	b := s.opts.Broker
	vhosts := make(map[string]counts)
	queues := make(map[qkey]counts)
	for _, vh := range b.VHostNames() {
		v := b.VHost(vh)
		if v == nil {
			continue
		}
		c := v.Counters()
		vhosts[vh] = fromCounters(c.Published, c.Queues)
		v.EachQueue(func(f core.QueueFigures) {
			queues[qkey{vh, f.Name}] = fromCounters(f.Counters.Published, f.Counters)
		})
	}
	rs := &s.rates
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if !rs.at.IsZero() {
		secs := now.Sub(rs.at).Seconds()
		rs.vRate = make(map[string]counts, len(vhosts))
		for k, c := range vhosts {
			if old, ok := rs.vhosts[k]; ok {
				rs.vRate[k] = c.minus(old, secs)
			}
		}
		rs.qRate = make(map[qkey]counts, len(queues))
		for k, c := range queues {
			if old, ok := rs.queues[k]; ok {
				rs.qRate[k] = c.minus(old, secs)
			}
		}
	}
	rs.at, rs.vhosts, rs.queues = now, vhosts, queues
}

// sampleLoop samples until done is closed.
func (s *Server) sampleLoop(done <-chan struct{}) {
	s.sample(time.Now())
	t := time.NewTicker(sampleInterval)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			s.sample(now)
		case <-done:
			return
		}
	}
}

func (s *Server) queueRate(vhost, name string) counts {
	s.rates.mu.Lock()
	defer s.rates.mu.Unlock()
	return s.rates.qRate[qkey{vhost, name}]
}

func (s *Server) vhostRate(vhost string) counts {
	s.rates.mu.Lock()
	defer s.rates.mu.Unlock()
	return s.rates.vRate[vhost]
}
