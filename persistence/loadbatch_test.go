package persistence

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/ferrymq/ferrymq/core"
)

// loadBatch calls LoadBatch with fresh result slices.
func loadBatch(s *Store, ids []uint64) ([]*core.Message, []error) {
	msgs, errs := make([]*core.Message, len(ids)), make([]error, len(ids))
	s.LoadBatch(ids, msgs, errs)
	return msgs, errs
}

// sameAsLoad checks LoadBatch's result for id against Load's: the same
// message, or the same error.
func sameAsLoad(t *testing.T, s *Store, id uint64, m *core.Message, err error) {
	t.Helper()
	lm, lerr := s.Load(id)
	switch {
	case (err == nil) != (lerr == nil):
		t.Errorf("id %d: LoadBatch error %v, Load error %v", id, err, lerr)
	case err != nil:
		if err.Error() != lerr.Error() {
			t.Errorf("id %d: LoadBatch error %q, Load error %q", id, err, lerr)
		}
		if m != nil {
			t.Errorf("id %d: LoadBatch gave a message with its error", id)
		}
	case m != lm: // a pending message is the very one appended, from both
		sameMessage(t, m, lm)
	}
}

func idRange(from, to uint64) []uint64 {
	var ids []uint64
	for id := from; id <= to; id++ {
		ids = append(ids, id)
	}
	return ids
}

// TestLoadBatch: LoadBatch gives every id what Load gives it, whether the
// message is in a table file, in the memtable, or appended and not yet
// committed (then the very message appended), in any order, with
// duplicates, gaps, removed and never-stored ids (ErrNotFound), before and
// after the pending messages commit, and ErrClosed once the store is
// closed.
func TestLoadBatch(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true})
	s.PutQueue(core.QueueRecord{VHost: "/", Name: "q"})
	want := map[uint64]*core.Message{}
	enqueue := func(from, to uint64) uint64 {
		var pos uint64
		for id := from; id <= to; id++ {
			m := plainMessage(id, uint8(id%3), fmt.Sprintf("body %d %s", id, strings.Repeat("b", int(id%7)*300)))
			if id%50 == 0 {
				m = richMessage(id, fmt.Sprintf("rich %d", id))
			}
			want[id] = m
			pos = s.Enqueue("/", "q", id, m, 0)
		}
		return pos
	}
	if err := s.Wait(enqueue(1, 200)); err != nil {
		t.Fatal(err)
	}
	closeStore(t, s) // 1..200 go to a table file
	s = open(t, dir, Options{NoSync: true})
	defer closeStore(t, s)
	if err := s.Wait(enqueue(201, 300)); err != nil { // in the memtable
		t.Fatal(err)
	}
	var pos uint64
	for id := uint64(50); id < 60; id++ { // removed: bodies deleted
		pos = s.Remove("/", "q", id, id)
		delete(want, id)
	}
	if err := s.Wait(pos); err != nil {
		t.Fatal(err)
	}
	entered, release := blockCommits(s)
	defer release()
	pending := enqueue(301, 310)
	<-entered // 301..310 stay pending until release

	cases := []struct {
		name string
		ids  []uint64
	}{
		{"empty", nil},
		{"consecutive, one table", idRange(1, 256)[:200]},
		{"table, memtable and pending", idRange(190, 310)},
		{"unsorted with duplicates", []uint64{300, 5, 5, 200, 201, 1, 305, 305, 2}},
		{"gaps, removed and never stored", []uint64{0, 1, 3, 49, 50, 55, 60, 61, 1000, 999_999, 1 << 63}},
		{"only pending", idRange(301, 310)},
	}
	run := func(phase string, committed bool) {
		for _, tc := range cases {
			t.Run(phase+"/"+tc.name, func(t *testing.T) {
				msgs, errs := loadBatch(s, tc.ids)
				for i, id := range tc.ids {
					w, stored := want[id]
					switch {
					case !stored:
						if !errors.Is(errs[i], ErrNotFound) || msgs[i] != nil {
							t.Errorf("id %d (not stored): %v, %v; want ErrNotFound", id, msgs[i], errs[i])
						}
					case errs[i] != nil:
						t.Errorf("id %d: %v", id, errs[i])
					case id > 300 && !committed:
						if msgs[i] != w {
							t.Errorf("id %d pending: got %p, want the appended message %p", id, msgs[i], w)
						}
					default:
						sameMessage(t, msgs[i], w)
					}
					sameAsLoad(t, s, id, msgs[i], errs[i])
				}
			})
		}
	}
	run("pending", false)
	release()
	if err := s.Wait(pending); err != nil {
		t.Fatal(err)
	}
	run("committed", true)

	closeStore(t, s)
	_, errs := loadBatch(s, []uint64{1, 300, 305})
	for i, err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("after Close, id %d: %v, want ErrClosed", []uint64{1, 300, 305}[i], err)
		}
	}
}

// TestLoadBatchDamaged: with bytes flipped in the value-log records of
// some messages, each id LoadBatch cannot read gets its own error, the one
// Load gives (ErrDamaged naming the file), and every other id of the same
// batch its message. The records are chosen, not hit at random, so that
// Open (which reads retained messages, not bodies) always accepts the store.
func TestLoadBatchDamaged(t *testing.T) {
	base, _ := damageStore(t)
	dir := copyDir(t, base)
	s := open(t, dir, Options{NoSync: true})
	type record struct {
		file        string
		off, length uint32
	}
	victims := map[uint64]record{}
	n := 0
	if err := s.scanItems(kindPrefix(kindMessage), s.readTs.Load(), func(item *badger.Item) error {
		n++
		id, _ := parseMessageKey(item.Key())
		if fid, length, off, ok := valuePointer(item); ok && n%97 == 0 {
			victims[id] = record{vlogName(dir, fid), off, length}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	closeStore(t, s)
	if len(victims) == 0 {
		t.Fatal("no message body in the value log to damage")
	}
	for _, r := range victims {
		b, err := os.ReadFile(r.file)
		if err != nil {
			t.Fatal(err)
		}
		b[r.off+r.length/2] ^= 0xff // inside the value: its checksum fails
		if err := os.WriteFile(r.file, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	s = open(t, dir, Options{NoSync: true})
	defer closeStore(t, s)
	got := recoverAll(t, s)
	damaged, read := 0, 0
	for q, ms := range got.messages {
		for from := 0; from < len(ms); from += 256 {
			var ids []uint64
			for _, m := range ms[from:min(from+256, len(ms))] {
				ids = append(ids, m.ID)
			}
			msgs, errs := loadBatch(s, ids)
			for i, id := range ids {
				v, bad := victims[id]
				switch err := errs[i]; {
				case err == nil && !bad:
					read++
				case err != nil && bad && errors.Is(err, ErrDamaged) && strings.Contains(err.Error(), v.file):
					damaged++
				default:
					t.Errorf("queue %s, id %d (damaged %v): %v", q, id, bad, err)
				}
				sameAsLoad(t, s, id, msgs[i], errs[i])
			}
		}
	}
	t.Logf("%d messages read, %d damaged", read, damaged)
	if damaged != len(victims) || read+damaged != n {
		t.Errorf("%d read, %d damaged of %d; want %d damaged", read, damaged, n, len(victims))
	}
}
