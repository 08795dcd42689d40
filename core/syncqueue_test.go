package core

import (
	"errors"
	"fmt"
	"testing"
)

// syncStore is a Store stub for SyncQueue: Notify registrations are kept
// and fired by the test.
type syncStore struct {
	memStore
	waiters []SyncWaiter
	pos     []uint64
}

func (s *syncStore) Notify(pos uint64, w SyncWaiter) {
	s.waiters = append(s.waiters, w)
	s.pos = append(s.pos, pos)
}

func (s *syncStore) fire(pos uint64, err error) {
	ws := s.waiters
	s.waiters, s.pos = nil, nil
	for _, w := range ws {
		w.Synced(pos, err)
	}
}

func TestSyncQueueOrder(t *testing.T) {
	st := &syncStore{memStore: *newMemStore()}
	b := NewBroker(Options{Store: st, Clock: newManualClock()})
	defer b.Close()
	var got []string
	q := NewSyncQueue(b, func(items []string, err error, fromStore bool) {
		for _, it := range items {
			got = append(got, fmt.Sprintf("%s:%v:%v", it, err != nil, fromStore))
		}
	})
	q.Add(0, "a")   // nothing waits: released at once
	q.Add(5, "b")   // waits for 5
	q.Add(0, "c")   // waits behind b
	q.Add(7, "d")   // waits for 7
	q.Add(0, "e")   // behind d: the last item has position 0
	st.fire(5, nil) // b and c go; must re-notify for 7 although e has 0
	if len(st.pos) != 1 || st.pos[0] != 7 {
		t.Fatalf("re-notified for %v, want [7]", st.pos)
	}
	st.fire(7, errors.New("disk full")) // d fails, e (position 0) does not
	want := []string{"a:false:false", "b:false:true", "c:false:true", "d:true:true", "e:false:true"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("released %v\nwant     %v", got, want)
	}
	q.Close()
	q.Add(0, "f")
	if len(got) != len(want) {
		t.Fatal("released after Close")
	}
}

// failingStore is a syncStore that is a FailureLog too.
type failingStore struct {
	syncStore
	fails []StoreFailure
	asked int
}

func (s *failingStore) FailedBetween(from, to uint64) []StoreFailure {
	s.asked++
	var out []StoreFailure
	for _, f := range s.fails {
		if f.From <= to && f.To >= from {
			out = append(out, f)
		}
	}
	return out
}

// TestSyncQueueOutcomePerPosition: with a FailureLog, each item a Synced
// releases gets its own position's outcome; an outage fails them all.
func TestSyncQueueOutcomePerPosition(t *testing.T) {
	refused := fmt.Errorf("value too large: %w", ErrStoreRefused)
	outage := errors.New("disk full")
	cases := []struct {
		name  string
		fails []StoreFailure // what the store's log holds
		err   error          // what the store tells the waiter at 9
		want  string
		asked bool // the log was consulted
	}{
		{"all durable", nil, nil, "[a:<nil> r:<nil> z:<nil> p:<nil>]", true},
		// r refused in an earlier commit than 9's: the success of 9 must
		// not release it as durable.
		{"refused in an earlier commit", []StoreFailure{{From: 5, To: 6, Err: refused}}, nil,
			"[a:<nil> r:value too large: store refused the write z:<nil> p:<nil>]", true},
		// 9's commit refused an op at 7: items from 7 on fail, a does not.
		{"refused in 9's commit", []StoreFailure{{From: 7, To: 12, Err: refused}}, refused,
			"[a:<nil> r:<nil> z:<nil> p:value too large: store refused the write]", true},
		// The log no longer holds the refusal: every item shares it.
		{"refusal the log forgot", nil, refused,
			"[a:value too large: store refused the write r:value too large: store refused the write z:<nil> p:value too large: store refused the write]", true},
		{"outage", []StoreFailure{{From: 5, To: 6, Err: refused}}, outage, "[a:disk full r:disk full z:<nil> p:disk full]", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := &failingStore{syncStore: syncStore{memStore: *newMemStore()}, fails: tc.fails}
			b := NewBroker(Options{Store: st, Clock: newManualClock()})
			defer b.Close()
			var got []string
			q := NewSyncQueue(b, func(items []string, err error, _ bool) {
				for _, it := range items {
					got = append(got, fmt.Sprintf("%s:%v", it, err))
				}
			})
			q.Add(3, "a")
			st.fire(2, nil) // nothing released: re-notified for the furthest
			q.Add(5, "r")
			q.Add(0, "z")
			q.Add(9, "p")
			st.fire(9, tc.err)
			if fmt.Sprint(got) != tc.want {
				t.Errorf("released %v\nwant     %v", got, tc.want)
			}
			if (st.asked > 0) != tc.asked {
				t.Errorf("log asked %d times", st.asked)
			}
		})
	}
}
