package persistence

import (
	"context"
	"errors"
	"net"
	"runtime"
	"slices"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/amqp"
	"github.com/ferrymq/ferrymq/core"
)

// crash stops s as a kill -9 would at this point: whatever the writer may
// commit (everything appended, up to an open Hold) is committed, and no
// commit succeeds after, Close's included. Safe to call from an append
// hook: it takes no lock the writer needs.
func crash(t testing.TB, s *Store) {
	s.mu.Lock()
	cut := s.cutLocked()
	s.mu.Unlock()
	s.signal()
	if err := s.Wait(cut); err != nil {
		t.Errorf("commit before the crash: %v", err)
	}
	dead := errors.New("injected: the process was killed")
	fail := func() error { return dead }
	s.testCommitHook.Store(&fail)
}

func deliveredFlags(t testing.TB, s *Store, queue string) []bool {
	t.Helper()
	var flags []bool
	err := s.Messages("/", queue, func(m core.StoredMessage) error {
		flags = append(flags, m.Delivered)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return flags
}

// TestDeliveredAfterCrash: a delivered mark rides along with commits, so a
// crash may lose it; after a crash every message comes back delivered
// (redelivered), as from RabbitMQ's classic queues, and stays so across a
// later clean restart. After a clean close only the delivered ones are.
// (A store written before the crash mark existed reads as cleanly closed.)
func TestDeliveredAfterCrash(t *testing.T) {
	for _, tc := range []struct {
		name  string
		crash bool
		again bool // a clean restart after the first reopen
		want  []bool
	}{
		{name: "clean close", want: []bool{true, true, true, false}},
		{name: "crash", crash: true, want: []bool{true, true, true, true}},
		{name: "crash then clean restart", crash: true, again: true, want: []bool{true, true, true, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, Options{NoSync: true})
			s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})
			for i := uint64(1); i <= 3; i++ {
				s.Enqueue("/", "q", i, plainMessage(i, 0, "m"), 0)
			}
			if err := s.Wait(3); err != nil {
				t.Fatal(err)
			}
			s.Delivered("/", "q", 2)
			// Delivered alone commits nothing; a later append carries it.
			s.Enqueue("/", "q", 4, plainMessage(4, 0, "m"), 0)
			s.Delivered("/", "q", 3) // only Close carries it: a crash loses it
			if tc.crash {
				crash(t, s)
			}
			closeStore(t, s)
			s = open(t, dir, Options{NoSync: true})
			if tc.again {
				closeStore(t, s)
				s = open(t, dir, Options{NoSync: true})
			}
			defer closeStore(t, s)
			if got := deliveredFlags(t, s, "q"); !slices.Equal(got, tc.want) {
				t.Fatalf("delivered flags %v, want %v", got, tc.want)
			}
		})
	}
}

// TestHoldKeepsAppendsTogether: what is appended from a Hold to its Release
// commits in one batch, or, if the process dies first, not at all; appends
// before the Hold commit meanwhile.
func TestHoldKeepsAppendsTogether(t *testing.T) {
	for _, tc := range []struct {
		name      string
		crashHeld bool // die while the hold is open
		wantSrc   int
		wantDead  int
	}{
		{name: "released", wantSrc: 0, wantDead: 1},
		{name: "crash while held", crashHeld: true, wantSrc: 1, wantDead: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, Options{NoSync: true})
			s.PutQueue(core.QueueRecord{VHost: "/", Name: "src"})
			s.PutQueue(core.QueueRecord{VHost: "/", Name: "dead"})
			enq := s.Enqueue("/", "src", 1, plainMessage(1, 0, "m"), 0)
			token := s.Hold()
			s.Remove("/", "src", 1, 1)
			moved := s.Enqueue("/", "dead", 1, plainMessage(2, 0, "m"), 0)
			if err := s.Wait(enq); err != nil {
				t.Fatal(err)
			}
			s.mu.Lock()
			synced := s.synced
			s.mu.Unlock()
			if synced >= token {
				t.Fatalf("committed up to %d while a hold from %d was open", synced, token)
			}
			if tc.crashHeld {
				crash(t, s)
			} else {
				s.Release(token)
				if err := s.Wait(moved); err != nil {
					t.Fatal(err)
				}
			}
			closeStore(t, s)
			s = open(t, dir, Options{NoSync: true})
			defer closeStore(t, s)
			got := recoverAll(t, s)
			if n := len(got.messages["//src"]); n != tc.wantSrc {
				t.Errorf("src holds %d messages, want %d", n, tc.wantSrc)
			}
			if n := len(got.messages["//dead"]); n != tc.wantDead {
				t.Errorf("dead holds %d messages, want %d", n, tc.wantDead)
			}
		})
	}
}

// broker is a core.Broker recovered from a store and served over AMQP on
// 127.0.0.1:0.
type broker struct {
	url  string
	core *core.Broker
	stop func()
}

func serveAMQP(t *testing.T, s *Store) *broker {
	t.Helper()
	b := core.NewBroker(core.Options{Logger: testLogger(t), Store: s})
	if err := b.Recover(s); err != nil {
		t.Fatalf("recover: %v", err)
	}
	srv := amqp.NewServer(b, amqp.Config{Logger: testLogger(t)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, amqp.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
		b.Close()
	}
	t.Cleanup(stop)
	return &broker{url: "amqp://guest:guest@" + ln.Addr().String() + "/", core: b, stop: stop}
}

func amqpChannel(t *testing.T, url string) *amqp091.Channel {
	t.Helper()
	conn, err := amqp091.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// publishConfirmed publishes a persistent message to queue and waits for
// its confirm: it is on disk.
func publishConfirmed(t *testing.T, ch *amqp091.Channel, queue, body string) {
	t.Helper()
	dc, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", queue, false, false,
		amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte(body)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ok, err := dc.WaitContext(ctx); !ok || err != nil {
		t.Fatalf("confirm of %q: ack=%v err=%v", body, ok, err)
	}
}

// storedBodies returns the bodies of the messages s holds for queue.
func storedBodies(t *testing.T, s *Store, queue string) []string {
	t.Helper()
	var bodies []string
	err := s.Messages("/", queue, func(m core.StoredMessage) error {
		msg, err := s.Load(m.ID)
		if err != nil {
			return err
		}
		bodies = append(bodies, string(msg.Body))
		return nil
	})
	if err != nil {
		t.Fatalf("messages of %s: %v", queue, err)
	}
	return bodies
}

// TestDeadLetterCrash: a persistent message dead-lettered (rejected,
// expired, dropped by x-max-length) is, after a crash at any point, in
// exactly one of its queue and its dead-letter queue. The failpoint kills
// the store just as the dead letter is appended to its new queue, after
// the source queue's remove (the window a batch boundary could split), or
// once the move is done.
func TestDeadLetterCrash(t *testing.T) {
	type window int
	const (
		moving window = iota // the dead letter's enqueue is being appended
		moved                // the move is done
	)
	for _, reason := range []string{"rejected", "expired", "maxlen"} {
		for _, w := range []window{moving, moved} {
			name := reason + map[window]string{moving: " crash while moving", moved: " crash after the move"}[w]
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				s := open(t, dir, Options{NoSync: true})
				b := serveAMQP(t, s)
				ch := amqpChannel(t, b.url)
				if err := ch.Confirm(false); err != nil {
					t.Fatal(err)
				}
				args := amqp091.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dead"}
				switch reason {
				case "expired":
					args["x-message-ttl"] = int32(200)
				case "maxlen":
					args["x-max-length"] = int32(1)
				}
				for q, a := range map[string]amqp091.Table{"src": args, "dead": nil} {
					if _, err := ch.QueueDeclare(q, true, false, false, false, a); err != nil {
						t.Fatal(err)
					}
				}
				crashed := make(chan struct{})
				if w == moving {
					hook := func(o *op) {
						if o.kind == opEnqueue && o.name == "dead" {
							crash(t, s)
							close(crashed)
						}
					}
					s.testAppendHook.Store(&hook)
				}
				publishConfirmed(t, ch, "src", "victim")
				switch reason {
				case "rejected":
					d, ok, err := ch.Get("src", false)
					if err != nil || !ok {
						t.Fatalf("get: ok=%v err=%v", ok, err)
					}
					if err := d.Reject(false); err != nil {
						t.Fatal(err)
					}
				case "maxlen":
					// Its confirm is a nack if the store dies meanwhile.
					if err := ch.PublishWithContext(context.Background(), "", "src", false, false,
						amqp091.Publishing{DeliveryMode: amqp091.Persistent, Body: []byte("newer")}); err != nil {
						t.Fatal(err)
					}
				}
				if w == moving {
					select {
					case <-crashed:
					case <-time.After(testDeadline):
						t.Fatal("the dead letter never reached its queue")
					}
				} else {
					// Moved, and the move's hold released.
					done := func() bool {
						s.mu.Lock()
						held := len(s.holds) > 0
						s.mu.Unlock()
						return !held && b.core.VHost("/").Queue("dead").Stats().Messages == 1
					}
					deadline := time.Now().Add(testDeadline)
					for !done() {
						if time.Now().After(deadline) {
							t.Fatal("the dead letter never reached its queue")
						}
						runtime.Gosched()
					}
					crash(t, s)
				}
				b.stop()
				closeStore(t, s)

				// The store as recovery reads it, before a broker acts on
				// it (an expired message would be dead-lettered again).
				s = open(t, dir, Options{NoSync: true})
				defer closeStore(t, s)
				src, dead := storedBodies(t, s, "src"), storedBodies(t, s, "dead")
				inSrc, inDead := slices.Contains(src, "victim"), slices.Contains(dead, "victim")
				if inSrc == inDead {
					t.Fatalf("after the crash src holds %q and dead %q: the message is in both or neither", src, dead)
				}
				if want := w == moving; inSrc != want {
					t.Errorf("message in src=%v, want %v (src %q, dead %q)", inSrc, want, src, dead)
				}
			})
		}
	}
}
