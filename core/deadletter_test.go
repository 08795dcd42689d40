package core

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestRejectDeadLetterXDeath(t *testing.T) {
	v, clk := newTestBroker(t)
	declareX(t, v, "work", "direct", nil)
	declareX(t, v, "dlx", "topic", nil)
	q := declareQ(t, v, "q", Table{"x-dead-letter-exchange": "dlx"})
	retry := declareQ(t, v, "retry", Table{"x-dead-letter-exchange": "work", "x-dead-letter-routing-key": "k"})
	bindQ(t, v, "q", "work", "k", nil)
	bindQ(t, v, "retry", "dlx", "#", nil)

	orig := &Message{Exchange: "work", RoutingKey: "k", Body: []byte("b"), Properties: Properties{
		Headers: Table{"app": "keep"}, Expiration: "60000", Flags: FlagHeaders | FlagExpiration,
	}}
	if res, err := v.Publish(orig); err != nil || res.Routed != 1 {
		t.Fatalf("publish: %+v %v", res, err)
	}
	c, s := consume(t, q, ConsumeOptions{})
	d := s.take()[0]
	q.Settle(c, []uint64{d.Seq}, Reject)
	firstTime := clk.Now().Truncate(time.Second).UTC()

	dl, ok := retry.Get(true)
	if !ok {
		t.Fatal("rejected message not dead-lettered")
	}
	m := dl.Msg
	if m == orig || m.Exchange != "dlx" || m.RoutingKey != "k" || string(m.Body) != "b" {
		t.Fatalf("dead letter %+v", m)
	}
	if m.Properties.Expiration != "" || m.Properties.Flags&FlagExpiration != 0 {
		t.Fatal("expiration not removed")
	}
	if orig.Properties.Headers["x-death"] != nil || orig.Properties.Expiration != "60000" {
		t.Fatal("original message modified")
	}
	wantHeaders := Table{
		"app": "keep",
		"x-death": []any{Table{
			"count": int64(1), "reason": "rejected", "queue": "q", "time": firstTime,
			"exchange": "work", "routing-keys": []any{"k"}, "original-expiration": "60000",
		}},
		"x-first-death-reason": "rejected", "x-first-death-queue": "q", "x-first-death-exchange": "work",
		"x-last-death-reason": "rejected", "x-last-death-queue": "q", "x-last-death-exchange": "work",
	}
	if !reflect.DeepEqual(m.Properties.Headers, wantHeaders) {
		t.Fatalf("headers\n got %#v\nwant %#v", m.Properties.Headers, wantHeaders)
	}

	// Back through "retry" (rejected there: no cycle check), then rejected
	// in q again: q's entry moves to the front with count 2 and keeps its
	// first time; retry's entry follows.
	clk.Advance(3 * time.Second)
	if res, err := v.Publish(m); err != nil || res.Routed != 1 {
		t.Fatalf("republish: %+v %v", res, err)
	}
	rd, _ := retry.Get(false)
	retry.Settle(nil, []uint64{rd.Seq}, Reject) // -> work/k -> q
	d2 := s.take()
	if len(d2) != 1 {
		t.Fatalf("q got %d messages back", len(d2))
	}
	q.Settle(c, []uint64{d2[0].Seq}, Reject) // -> dlx -> retry
	again, ok := retry.Get(true)
	if !ok {
		t.Fatal("second death lost")
	}
	h := again.Msg.Properties.Headers
	deaths := h["x-death"].([]any)
	if len(deaths) != 2 {
		t.Fatalf("x-death %#v", deaths)
	}
	front, second := deaths[0].(Table), deaths[1].(Table)
	if front["queue"] != "q" || front["count"] != int64(2) || !front["time"].(time.Time).Equal(firstTime) ||
		front["original-expiration"] != "60000" {
		t.Fatalf("front entry %#v", front)
	}
	if second["queue"] != "retry" || second["count"] != int64(1) || second["exchange"] != "dlx" {
		t.Fatalf("second entry %#v", second)
	}
	if h["x-first-death-queue"] != "q" || h["x-last-death-queue"] != "q" || h["x-last-death-exchange"] != "work" {
		t.Fatalf("first/last headers %#v", h)
	}
}

func TestDeadLetterWithoutDLXOrMissingDLX(t *testing.T) {
	v, _ := newTestBroker(t)
	plain := declareQ(t, v, "plain", nil)
	dangling := declareQ(t, v, "dangling", Table{"x-dead-letter-exchange": "nowhere"})
	for _, q := range []*Queue{plain, dangling} {
		publish(t, v, "", q.Name(), "m")
		d, _ := q.Get(false)
		q.Settle(nil, []uint64{d.Seq}, Reject)
		if n, _ := q.Counts(); n != 0 {
			t.Fatalf("%s kept a rejected message", q.Name())
		}
	}
}

func TestDeadLetterToDefaultExchange(t *testing.T) {
	v, _ := newTestBroker(t)
	target := declareQ(t, v, "target", nil)
	q := declareQ(t, v, "q", Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "target"})
	publish(t, v, "", "q", "m")
	d, _ := q.Get(false)
	q.Settle(nil, []uint64{d.Seq}, Reject)
	if got := getAll(target); !equalStrings(got, []string{"m"}) {
		t.Fatalf("target got %v", got)
	}
}

func TestDeadLetterCycles(t *testing.T) {
	t.Run("expiry back into itself is dropped", func(t *testing.T) {
		v, clk := newTestBroker(t)
		q := declareQ(t, v, "q", Table{"x-message-ttl": int32(10), "x-dead-letter-exchange": ""})
		publish(t, v, "", "q", "m")
		clk.Advance(20 * time.Millisecond)
		if n, _ := q.Counts(); n != 0 {
			t.Fatal("cycling message was requeued")
		}
		if clk.pending() != 0 {
			t.Fatal("timer left armed")
		}
	})
	t.Run("two-queue expiry cycle is dropped after one lap", func(t *testing.T) {
		v, clk := newTestBroker(t)
		a := declareQ(t, v, "a", Table{"x-message-ttl": int32(10), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "b"})
		b := declareQ(t, v, "b", Table{"x-message-ttl": int32(10), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "a"})
		publish(t, v, "", "a", "m")
		clk.Advance(10 * time.Millisecond) // a -> b
		if n, _ := b.Counts(); n != 1 {
			t.Fatal("first hop lost")
		}
		clk.Advance(10 * time.Millisecond) // b -> a would cycle
		na, _ := a.Counts()
		nb, _ := b.Counts()
		if na+nb != 0 {
			t.Fatalf("cycle not broken: a=%d b=%d", na, nb)
		}
	})
	t.Run("a rejection in the cycle keeps it going", func(t *testing.T) {
		v, _ := newTestBroker(t)
		q := declareQ(t, v, "q", Table{"x-dead-letter-exchange": ""})
		publish(t, v, "", "q", "m")
		for i := range 3 {
			d, ok := q.Get(false)
			if !ok {
				t.Fatalf("lap %d: message lost", i)
			}
			q.Settle(nil, []uint64{d.Seq}, Reject)
		}
		d, ok := q.Get(true)
		if !ok {
			t.Fatal("message lost")
		}
		if c := d.Msg.Properties.Headers["x-death"].([]any)[0].(Table)["count"]; c != int64(3) {
			t.Fatalf("count = %v, want 3", c)
		}
	})
}

func TestIsCycle(t *testing.T) {
	e := func(q, r string) Table { return Table{"queue": q, "reason": r} }
	cases := []struct {
		queue  string
		deaths []any
		want   bool
	}{
		{"a", nil, false},
		{"a", []any{e("a", "expired")}, true},
		{"a", []any{e("b", "maxlen"), e("a", "expired")}, true},
		{"a", []any{e("b", "rejected"), e("a", "expired")}, false},
		{"a", []any{e("a", "rejected")}, false},
		{"c", []any{e("a", "expired"), e("b", "expired")}, false},
		{"a", []any{"junk", e("a", "expired")}, false},
	}
	for _, tc := range cases {
		if got := isCycle(tc.queue, tc.deaths); got != tc.want {
			t.Errorf("isCycle(%s, %v) = %v", tc.queue, tc.deaths, got)
		}
	}
}

// TestDeadLetterHoldsStore: a stored message dead-lettered for any reason
// leaves its queue and enters its dead-letter queue within one store Hold,
// so that both changes commit in one batch (persistence/ kills the store in
// that window); every Hold is released.
func TestDeadLetterHoldsStore(t *testing.T) {
	for _, tc := range []struct {
		name string
		args Table
		do   func(t *testing.T, v *VHost, q *Queue, clk *manualClock)
	}{
		{"rejected", nil, func(t *testing.T, v *VHost, q *Queue, _ *manualClock) {
			d, ok := q.Get(false)
			if !ok {
				t.Fatal("get: empty")
			}
			q.Settle(nil, []uint64{d.Seq}, Reject)
		}},
		{"expired", Table{"x-message-ttl": int32(1000)}, func(t *testing.T, v *VHost, q *Queue, clk *manualClock) {
			clk.Advance(2 * time.Second)
		}},
		{"maxlen", Table{"x-max-length": int32(1)}, func(t *testing.T, v *VHost, q *Queue, _ *manualClock) {
			publish(t, v, "", "q", "newer", persistent)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newMemStore()
			clk := newManualClock()
			v := newStoreBroker(t, s, clk, -1)
			declareDurable(t, v, "dead", nil)
			args := Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}
			for k, a := range tc.args {
				args[k] = a
			}
			q := declareDurable(t, v, "q", args)
			publish(t, v, "", "q", "m", persistent)
			s.mu.Lock()
			s.log = nil
			s.mu.Unlock()
			tc.do(t, v, q, clk)
			s.mu.Lock()
			defer s.mu.Unlock()
			i := slices.Index(s.log, "hold")
			if i < 0 || len(s.log) < i+4 || !slices.Equal(s.log[i:i+4], []string{"hold", "remove q", "enqueue dead", "release"}) {
				t.Fatalf("store log %q: want hold, remove q, enqueue dead, release", s.log)
			}
			if s.holds != 0 {
				t.Fatalf("%d holds left open", s.holds)
			}
		})
	}
}
