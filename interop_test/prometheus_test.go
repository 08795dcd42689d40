package interop_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// promWait bounds each wait on Prometheus: its start, the first scrape,
// and the counter catching up (scrapes are 1 s apart).
const promWait = 30 * time.Second

// prometheusBinary returns Debian's prometheus (PROMETHEUS overrides). Its
// absence fails the test: .ci/run installs the package.
func prometheusBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMETHEUS"); p != "" {
		return p
	}
	for _, p := range []string{"/usr/bin/prometheus"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("prometheus"); err == nil {
		return p
	}
	t.Fatal("prometheus not found (set PROMETHEUS, or apt-get install prometheus)")
	return ""
}

// startPrometheus runs a real Prometheus on a free loopback port,
// scraping target's /metrics every second, and returns its base URL once
// it is ready. It is stopped when the test ends.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: ferrymq
    metrics_path: /metrics
    static_configs:
      - targets: [%q]
`, target)
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	logPath := filepath.Join(dir, "prometheus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(prometheusBinary(t),
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("prometheus log:\n%s", b)
		}
	})
	base := "http://" + addr
	promPoll(t, exited, "prometheus ready", func() error {
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	return base
}

// promPoll calls check every 200 ms until it returns nil, failing the test
// with its last error after promWait or if Prometheus exits.
func promPoll(t *testing.T, exited <-chan struct{}, what string, check func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), promWait)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		err := check()
		if err == nil {
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s: prometheus exited; last: %v", what, err)
		case <-ctx.Done():
			t.Fatalf("%s: not within %v: %v", what, promWait, err)
		case <-tick.C:
		}
	}
}

// promGet GETs a Prometheus API path and decodes its "data".
func promGet(base, path string, data any) error {
	resp, err := http.Get(base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("%s: %v: %s", path, err, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, env.Status, env.Error)
	}
	return json.Unmarshal(env.Data, data)
}

// promValue runs an instant query that must return one sample.
func promValue(base, query string) (float64, error) {
	var data struct {
		Result []struct {
			Value [2]any `json:"value"`
		} `json:"result"`
	}
	if err := promGet(base, "/api/v1/query?query="+url.QueryEscape(query), &data); err != nil {
		return 0, err
	}
	if len(data.Result) != 1 {
		return 0, fmt.Errorf("%s: %d series", query, len(data.Result))
	}
	s, _ := data.Result[0].Value[1].(string)
	return strconv.ParseFloat(s, 64)
}

// TestPrometheusScrapesBroker: a real Prometheus scrapes the broker's
// /metrics without errors (its target is "up" with no last error), and
// the published-messages counter it stored matches what the test
// published over AMQP.
func TestPrometheusScrapesBroker(t *testing.T) {
	b := StartBroker(t)
	_, ch := dialBroker(t, b)
	if _, err := ch.QueueDeclare("prom-q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	const published = 37
	for i := range published {
		dc, err := ch.PublishWithDeferredConfirmWithContext(t.Context(), "", "prom-q", false, false, amqp.Publishing{Body: []byte(strconv.Itoa(i))})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(t.Context()); !ok || err != nil {
			t.Fatalf("publish %d not confirmed: %v", i, err)
		}
	}

	// An MQTT client too, subscribed: connections and consumers by protocol.
	mq := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "prom-device"})
	mq.SubscribeAt(t, 0, "sensors/#")

	prom := startPrometheus(t, b.HTTPAddr)
	promPoll(t, nil, "target up", func() error {
		var data struct {
			ActiveTargets []struct {
				Health     string `json:"health"`
				LastError  string `json:"lastError"`
				ScrapeURL  string `json:"scrapeUrl"`
				LastScrape string `json:"lastScrape"`
			} `json:"activeTargets"`
		}
		if err := promGet(prom, "/api/v1/targets", &data); err != nil {
			return err
		}
		if len(data.ActiveTargets) != 1 {
			return fmt.Errorf("%d active targets", len(data.ActiveTargets))
		}
		tg := data.ActiveTargets[0]
		if tg.Health != "up" || tg.LastError != "" {
			return fmt.Errorf("target %s: health %q, last error %q", tg.ScrapeURL, tg.Health, tg.LastError)
		}
		return nil
	})
	promPoll(t, nil, "published counter", func() error {
		v, err := promValue(prom, `ferrymq_messages_published_total{vhost="/"}`)
		if err != nil {
			return err
		}
		if v != published {
			return fmt.Errorf("ferrymq_messages_published_total = %v, want %d", v, published)
		}
		return nil
	})
	// Every query of the Grafana dashboard is valid PromQL for a real
	// Prometheus.
	for _, q := range dashboardExprs(t) {
		q = strings.NewReplacer("$instance", ".*", "$vhost", ".*", "$__rate_interval", "1m").Replace(q)
		var data struct {
			Result []json.RawMessage `json:"result"`
		}
		if err := promGet(prom, "/api/v1/query?query="+url.QueryEscape(q), &data); err != nil {
			t.Errorf("dashboard query: %v", err)
		}
	}
	// What else the scrape stored: the queue's ready messages, the
	// connections, the MQTT session's consumer. Polled too: a scrape that
	// times out (1 s) on a loaded machine marks the series stale until
	// the next one succeeds.
	for q, want := range map[string]float64{
		`ferrymq_queue_messages_ready{vhost="/"}`:       published,
		`ferrymq_connections{protocol="amqp"}`:          1,
		`ferrymq_connections{protocol="mqtt"}`:          1,
		`ferrymq_consumers{protocol="mqtt", vhost="/"}`: 1,
		`ferrymq_messages_enqueued_total{vhost="/"}`:    published,
	} {
		promPoll(t, nil, q, func() error {
			v, err := promValue(prom, q)
			if err != nil {
				return err
			}
			if v != want {
				return fmt.Errorf("%s = %v, want %v", q, v, want)
			}
			return nil
		})
	}
}

// dashboardExprs returns the PromQL expressions ("expr") of the Grafana
// dashboard in the repository.
func dashboardExprs(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "cmd", "ferrymq", "metrics", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if s, ok := e.(string); ok && k == "expr" {
					out = append(out, s)
				}
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(doc)
	if len(out) == 0 {
		t.Fatal("no expressions in the dashboard")
	}
	return out
}
