package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// mgmtQueuesName is the management API scenario: --queues queues
// (10,000), then GET /api/queues?page=1&page_size=100, timed. Issue 12's
// target is under 100 ms; the report shows the p50 and p99. It also
// reads /metrics once, to report its size with that many queues.
const mgmtQueuesName = "mgmt-queues-10k"

// mgmtGets is how many times the page is fetched.
const mgmtGets = 50

// mgmtTarget is issue 12's bound on one page of queues, and
// mgmtMetricsTarget its bound on /metrics (without per-object metrics)
// with that many queues.
const (
	mgmtTarget        = 100 * time.Millisecond
	mgmtMetricsTarget = 100_000
)

func mgmtQueues(ctx context.Context, r *run, res *result) error {
	n := r.cfg.queues
	base, err := url.Parse(r.cfg.httpURL)
	if err != nil || base.Host == "" {
		return fmt.Errorf("--http-url %q: want http://user:pass@host:port", r.cfg.httpURL)
	}
	user, pass := "guest", "guest"
	if base.User != nil {
		user = base.User.Username()
		pass, _ = base.User.Password()
	}
	base.User = nil
	workers, err := amqpConns(r.cfg, topoWorkers, false)
	if err != nil {
		return err
	}
	defer closeAMQP(workers)

	// Declare, topoWorkers channels in parallel, each waiting for every
	// reply; deleted at the end whatever happens.
	name := func(i int) string { return fmt.Sprintf("%s-m%05d", r.id, i) }
	declare := func(fn func(ch *amqp.Channel, q string) error) error {
		var wg sync.WaitGroup
		errs := make([]error, len(workers))
		for w, conn := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ch, err := conn.Channel()
				if err != nil {
					errs[w] = err
					return
				}
				defer ch.Close()
				for i := w; i < n; i += len(workers) {
					if ctx.Err() != nil {
						errs[w] = ctx.Err()
						return
					}
					if err := fn(ch, name(i)); err != nil {
						errs[w] = fmt.Errorf("queue %s: %w", name(i), err)
						return
					}
				}
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		return nil
	}
	defer func() {
		t0 := time.Now()
		err := declare(func(ch *amqp.Channel, q string) error { _, err := ch.QueueDelete(q, false, false, false); return err })
		if err != nil {
			r.warn("cleanup: %v", err)
		}
		res.DeleteSeconds = time.Since(t0).Seconds()
	}()
	t0 := time.Now()
	if err := declare(func(ch *amqp.Channel, q string) error {
		_, err := ch.QueueDeclare(q, false, false, false, false, nil)
		return err
	}); err != nil {
		return err
	}
	res.DeclareSeconds = time.Since(t0).Seconds()
	res.Queues = n

	client := &http.Client{Timeout: 30 * time.Second}
	get := func(path string) ([]byte, time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", base.JoinPath(path).String()+"?page=1&page_size=100", nil)
		if path == "/metrics" {
			req, err = http.NewRequestWithContext(ctx, "GET", base.JoinPath(path).String(), nil)
		}
		if err != nil {
			return nil, 0, err
		}
		req.SetBasicAuth(user, pass)
		t := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return nil, 0, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		took := time.Since(t)
		if err == nil && resp.StatusCode != 200 {
			err = fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return body, took, err
	}
	var lat []time.Duration
	start := time.Now()
	for range mgmtGets {
		body, took, err := get("/api/queues")
		if err != nil {
			return err
		}
		var page struct {
			Items      []json.RawMessage `json:"items"`
			TotalCount int               `json:"total_count"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return fmt.Errorf("GET /api/queues: %w", err)
		}
		if len(page.Items) != 100 || page.TotalCount < n {
			return fmt.Errorf("GET /api/queues?page=1&page_size=100: %d items of %d, want 100 of at least %d", len(page.Items), page.TotalCount, n)
		}
		lat = append(lat, took)
	}
	elapsed := time.Since(start)
	slices.Sort(lat)
	res.Published, res.Received, res.Expected = mgmtGets, mgmtGets, mgmtGets
	res.Seconds = elapsed.Seconds()
	res.MsgPerSec = float64(mgmtGets) / elapsed.Seconds()
	res.P50us = float64(lat[len(lat)/2].Microseconds())
	res.P99us = float64(lat[len(lat)*99/100].Microseconds())
	if p50 := lat[len(lat)/2]; p50 >= mgmtTarget {
		r.warn("GET /api/queues?page=1&page_size=100 with %d queues: p50 %v, over the %v target", n, p50, mgmtTarget)
	}
	if body, _, err := get("/metrics"); err == nil {
		res.MetricsBytes = len(body)
		if len(body) >= mgmtMetricsTarget {
			r.warn("/metrics with %d queues: %d bytes, over the %d-byte target", n, len(body), mgmtMetricsTarget)
		}
	} else {
		r.warn("/metrics: %v", err)
	}
	return nil
}
