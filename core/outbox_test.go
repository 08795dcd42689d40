package core

import "testing"

// TestOutbox: deliveries stop at the high-water mark, counting what the
// writer took until it is written; a written buffer is
// reused unless a burst made it too big to keep; refused consumers are
// handed back once; Reset drops both.
func TestOutbox(t *testing.T) {
	for _, tc := range []struct {
		name      string
		size      int // bytes appended before Take
		full      bool
		keepSpare bool
	}{
		{"empty", 0, false, true},
		{"below the mark", outboxHighWater - 1, false, true},
		{"at the mark", outboxHighWater, true, true},
		{"too big to keep", outboxMaxSpare + 1, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var o Outbox
			o.Buf = append(o.Buf, make([]byte, tc.size)...)
			if o.Full() != tc.full {
				t.Fatalf("Full = %v, want %v", o.Full(), tc.full)
			}
			buf := o.Take()
			if len(buf) != tc.size || len(o.Buf) != 0 || o.Full() != tc.full || o.Pending() != tc.size {
				t.Fatalf("Take: %d bytes, %d left, full %v, pending %d", len(buf), len(o.Buf), o.Full(), o.Pending())
			}
			o.Written(buf)
			if o.Full() || o.Pending() != 0 {
				t.Fatalf("written: full %v, pending %d", o.Full(), o.Pending())
			}
			o.Buf = append(o.Buf, 'x')
			o.Take()
			reused := cap(o.Buf) == cap(buf) && cap(buf) > 0
			if tc.size > 0 && reused != tc.keepSpare {
				t.Fatalf("spare reused = %v, want %v", reused, tc.keepSpare)
			}
		})
	}

	var o Outbox
	a, b := &Consumer{tag: "a"}, &Consumer{tag: "b"}
	if o.HasRefused() || o.TakeRefused() != nil {
		t.Fatal("refused consumers in a new Outbox")
	}
	o.Refuse(a)
	o.Refuse(b)
	if !o.HasRefused() {
		t.Fatal("HasRefused false after Refuse")
	}
	if got := o.TakeRefused(); len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("TakeRefused = %v, want [a b]", got)
	}
	if o.HasRefused() || o.TakeRefused() != nil {
		t.Fatal("refused consumers handed back twice")
	}

	o.Buf = append(o.Buf, "abc"...)
	o.Refuse(a)
	o.Reset()
	if len(o.Buf) != 0 || o.HasRefused() {
		t.Fatal("Reset kept output or refused consumers")
	}
}
