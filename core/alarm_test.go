package core

import (
	"fmt"
	"slices"
	"testing"
)

// TestAlarms raises and clears alarms in turn: publishing is blocked while
// any is in effect, the watchers hear of the first raise and the last
// clear only, and a gate taken while blocked opens when the last clears.
func TestAlarms(t *testing.T) {
	type step struct {
		raise, clear string // resource to raise (with reason "low <resource>") or clear
		blocked      bool   // Blocked after the step
		reason       string // Blocked's reason after the step
		alarms       []string
		heard        string // watcher calls during the step
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"one alarm", []step{
			{raise: AlarmDisk, blocked: true, reason: "low disk", alarms: []string{"disk"}, heard: "blocked(low disk) "},
			{clear: AlarmDisk, alarms: []string{}, heard: "unblocked "},
		}},
		{"two alarms overlap", []step{
			{raise: AlarmMemory, blocked: true, reason: "low memory", alarms: []string{"memory"}, heard: "blocked(low memory) "},
			{raise: AlarmDisk, blocked: true, reason: "low disk; low memory", alarms: []string{"disk", "memory"}},
			{clear: AlarmMemory, blocked: true, reason: "low disk", alarms: []string{"disk"}},
			{clear: AlarmDisk, alarms: []string{}, heard: "unblocked "},
		}},
		{"raised twice, cleared once", []step{
			{raise: AlarmDisk, blocked: true, reason: "low disk", alarms: []string{"disk"}, heard: "blocked(low disk) "},
			{raise: AlarmDisk, blocked: true, reason: "low disk", alarms: []string{"disk"}},
			{clear: AlarmDisk, alarms: []string{}, heard: "unblocked "},
		}},
		{"clearing what is not raised", []step{
			{clear: AlarmMemory, alarms: []string{}},
			{raise: AlarmDisk, blocked: true, reason: "low disk", alarms: []string{"disk"}, heard: "blocked(low disk) "},
			{clear: AlarmMemory, blocked: true, reason: "low disk", alarms: []string{"disk"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newManualClock()
			b := NewBroker(Options{Clock: clock})
			defer b.Close()
			var heard string
			stop := b.WatchAlarms(func(blocked bool, reason string) {
				if blocked {
					heard += fmt.Sprintf("blocked(%s) ", reason)
				} else {
					heard += "unblocked "
				}
			})
			defer stop()
			var gates []<-chan struct{}
			for i, st := range tt.steps {
				heard = ""
				if st.raise != "" {
					b.Block(st.raise, "low "+st.raise)
				} else {
					b.Unblock(st.clear)
				}
				gate, reason := b.Blocked()
				if (gate != nil) != st.blocked || reason != st.reason {
					t.Fatalf("step %d: Blocked = (%v, %q), want (%v, %q)", i, gate != nil, reason, st.blocked, st.reason)
				}
				if gate != nil {
					gates = append(gates, gate)
				}
				var got []string
				for _, a := range b.Alarms() {
					got = append(got, a.Resource)
					if !a.Since.Equal(clock.Now()) {
						t.Errorf("step %d: alarm %s since %v, want %v", i, a.Resource, a.Since, clock.Now())
					}
				}
				if !slices.Equal(got, st.alarms) && len(got)+len(st.alarms) > 0 {
					t.Fatalf("step %d: Alarms = %v, want %v", i, got, st.alarms)
				}
				if heard != st.heard {
					t.Fatalf("step %d: watcher heard %q, want %q", i, heard, st.heard)
				}
			}
			blocked, _ := b.Blocked()
			for _, g := range gates {
				select {
				case <-g:
					if blocked != nil {
						t.Fatal("a gate opened while an alarm is still in effect")
					}
				default:
					if blocked == nil {
						t.Fatal("a gate stayed shut after the last alarm cleared")
					}
				}
			}
		})
	}
}
