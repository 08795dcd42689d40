package bridge

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// An MQTT 3.1.1 upstream has no negative PUBACK: a broker that will not
// take a publish (not authorized, over its packet size) either drops it
// and acks it (Mosquitto), which does not hold the link, or closes the
// connection (ferrymq, RabbitMQ's MQTT plugin; any broker over its
// packet size), which would hold it for good: the message goes back to
// the queue's head and closes the next connection too. A dropped
// connection says nothing of why, so the link only concludes that a
// message is refused from repeated evidence (closeProbe):
//
//   - a connection lost within closeWindow of a publish, with publishes
//     unconfirmed, makes those suspects: the next connections send them
//     one at a time, each once the one before it is confirmed;
//   - a connection lost within closeWindow of a suspect's publish, with it
//     alone in flight, is a strike against that message (by content:
//     another message with the same topic and body would fare the same);
//   - closeStrikes consecutive strikes against one message refuse it for
//     good, as the MQTT 5 link's PUBACK 0x87 does: acked here, counted
//     and logged.
//
// An outage closes a connection at a time unrelated to the publishes: the
// chance that it falls within one round trip after the same message's
// publish, three times in a row, is small; and an upstream that crashes
// on that message each time is best spared it.
type closeProbe struct {
	mu       sync.Mutex
	suspects int    // messages from the queue's head to send alone
	key      uint64 // the message struck last
	strikes  int    // consecutive strikes against key
	refused  uint64 // messages refused for good, for the log's rate limit
}

// closeStrikes is how many times in a row a connection must drop right
// after a message's publish, alone in flight, for it to be refused.
const closeStrikes = 3

// closeWindow is how soon after a publish a dropped connection counts
// against it: a broker that refuses a publish closes the connection as it
// reads it, one round trip after it was sent, with room for a loaded
// machine.
const closeWindow = 2 * time.Second

var probeSeed = maphash.MakeSeed()

// messageKey identifies a message by what an upstream judges it by.
func messageKey(topic string, m *core.Message) uint64 {
	var h maphash.Hash
	h.SetSeed(probeSeed)
	h.WriteString(topic)
	h.WriteByte(0)
	h.Write(m.Body)
	return h.Sum64()
}

// suspecting reports whether the next publish is a suspect, to be sent
// alone.
func (p *closeProbe) suspecting() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.suspects > 0
}

// confirmed records that a publish sent alone was confirmed.
func (p *closeProbe) confirmed(key uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.suspects = max(p.suspects-1, 0)
	if key == p.key {
		p.strikes = 0
	}
}

// lost records a connection lost within closeWindow of a publish with n
// publishes unconfirmed: they are sent alone from now on.
func (p *closeProbe) lost(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.suspects = max(p.suspects, n)
}

// strike records a connection lost within closeWindow of the publish of
// key, alone in flight, and reports how many times in a row that
// happened; at closeStrikes the message is refused and no longer a
// suspect, and refused is the count of messages refused so far.
func (p *closeProbe) strike(key uint64) (strikes int, refused uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if key != p.key {
		p.key, p.strikes = key, 0
	}
	p.strikes++
	p.suspects = max(p.suspects, 1)
	strikes = p.strikes
	if strikes >= closeStrikes {
		p.strikes = 0
		p.suspects--
		p.refused++
	}
	return strikes, p.refused
}
