//go:build linux

package interop_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestMemoryLimitBlocksTransientFlood floods a queue without consumers
// with transient messages against a broker started with a small
// --memory-limit: the broker raises its memory alarm, the AMQP publisher
// gets connection.blocked and is no longer read from, and the broker's RSS
// stays bounded by the limit (5.2 GB for 3 GiB of bodies before). Once a
// consumer drains the queue the alarm clears, the publisher is unblocked
// and both crossings were logged at WARN.
func TestMemoryLimitBlocksTransientFlood(t *testing.T) {
	const (
		limit = 128 << 20
		size  = 64 << 10
		flood = 1 << 30 // what the publisher tries to send: 8 x the limit
	)
	b := StartBroker(t, "--memory-limit", "128MiB")
	pid := b.Cmd.Process.Pid
	conn, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("flood", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	published := make(chan int, 1)
	go func() {
		body := make([]byte, size)
		n := 0
		for ; n < flood/size && ctx.Err() == nil; n++ {
			if err := ch.PublishWithContext(ctx, "", "flood", false, false, amqp.Publishing{Body: body}); err != nil {
				break
			}
		}
		published <- n
	}()

	peak := int64(0)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var isBlocked bool
	for !isBlocked {
		select {
		case bl := <-blocked:
			isBlocked = bl.Active
			if isBlocked && !strings.Contains(bl.Reason, "memory") {
				t.Fatalf("blocked for %q, want the memory alarm", bl.Reason)
			}
		case n := <-published:
			t.Fatalf("published all %d messages (%d MiB) without being blocked", n, n*size>>20)
		case <-tick.C:
			peak = max(peak, rssBytes(t, pid))
		case <-ctx.Done():
			t.Fatal("no connection.blocked within 120 s")
		}
	}
	// The broker no longer reads from the publisher: RSS stays where it
	// was. Watch it over a few readings of the broker's own (250 ms).
	for range 40 {
		<-tick.C
		peak = max(peak, rssBytes(t, pid))
	}
	// The publisher's connection is not read from: ask on another.
	cconn, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer cconn.Close()
	cch, err := cconn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	info, err := cch.QueueDeclarePassive("flood", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("--memory-limit 128MiB: blocked after %d MiB queued; broker RSS peak %d MiB", info.Messages*size>>20, peak>>20)
	// The GC soft limit is a quarter above the limit; the rest is the
	// store's and the runtime's own.
	if bound := int64(limit + limit/4 + 96<<20); peak > bound {
		t.Fatalf("broker RSS peaked at %d MiB, more than %d MiB for a %d MiB limit", peak>>20, bound>>20, limit>>20)
	}

	// A consumer drains the queue: the alarm clears, publishing resumes.
	deliveries, err := cch.Consume("flood", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range deliveries {
		}
	}()
	select {
	case bl := <-blocked:
		if bl.Active {
			t.Fatalf("blocked again (%q) instead of unblocked", bl.Reason)
		}
	case <-ctx.Done():
		t.Fatal("no connection.unblocked within 120 s of draining the queue")
	}
	cancel()
	conn.Close()
	<-published
	out := b.Output()
	for _, want := range []string{`level=WARN msg="memory alarm raised`, `level=WARN msg="memory alarm cleared`} {
		if !strings.Contains(out, want) {
			t.Errorf("broker log lacks %s", want)
		}
	}
}

// rssBytes reads a process's resident set size (VmRSS).
func rssBytes(t testing.TB, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
