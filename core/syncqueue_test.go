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
