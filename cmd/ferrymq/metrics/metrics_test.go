package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt"
	"github.com/ferrymq/ferrymq/persistence"
)

// scrape GETs path from h and parses the text format.
func scrape(t testing.TB, h http.Handler, path string) (map[string]*dto.MetricFamily, int) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
	}
	body, _ := io.ReadAll(rec.Body)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
	return fams, len(body)
}

// value returns the value of the series of family name whose labels
// include want, or fails.
func value(t testing.TB, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, m := range f.Metric {
		for k, v := range want {
			found := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no series %s%v", name, want)
	return 0
}

type sink struct{}

func (sink) Deliver(core.Delivery) bool { return true }
func (sink) Cancelled(*core.Consumer)   {}

// TestExporter drives a broker with a store and a bridge list through
// each kind of figure, then checks the scrape: the values, that the
// output lints clean, and that per-queue series appear only on
// /metrics/per-object.
func TestExporter(t *testing.T) {
	st, err := persistence.Open(t.TempDir(), persistence.Options{NoSync: true, GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := core.NewBroker(core.Options{Store: st})
	defer b.Close()
	v := b.VHost("/")
	if _, err := v.DeclareQueue(core.QueueDecl{Name: "jobs", Durable: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.DeclareQueue(core.QueueDecl{Name: "idle"}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		m := &core.Message{RoutingKey: "jobs", Body: []byte(fmt.Sprint("job ", i)), Properties: core.Properties{DeliveryMode: 2}}
		res, err := v.Publish(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.WaitSynced(res.Pos); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := v.Publish(&core.Message{RoutingKey: "nowhere"}); err != nil {
		t.Fatal(err)
	}
	q := v.Queue("jobs")
	d, _ := q.Get(false)
	q.Settle(nil, []uint64{d.Seq}, core.Ack)
	if _, err := q.Consume(core.ConsumeOptions{Tag: "c", NoAck: true, Protocol: "mqtt"}, sink{}); err != nil {
		t.Fatal(err)
	}
	lastErr := time.Unix(1700000000, 0)
	bridges := func() []bridge.Status {
		return []bridge.Status{{Name: "uplink", Connected: true, Backlog: 3, Forwarded: 42, LastError: "refused", LastErrorAt: lastErr}}
	}
	mqttStats := func() mqtt.Stats { return mqtt.Stats{SessionsLost: 2, DroppedTooLarge: 5} }
	e := New(Sources{Broker: b, Store: st, Bridges: bridges, MQTT: mqttStats, Version: "test"})

	fams, size := scrape(t, e, Path)
	t.Logf("/metrics: %d bytes, %d families", size, len(fams))
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"ferrymq_messages_published_total", map[string]string{"vhost": "/"}, 6},
		{"ferrymq_messages_unroutable_total", map[string]string{"vhost": "/"}, 1},
		{"ferrymq_messages_enqueued_total", map[string]string{"vhost": "/"}, 5},
		{"ferrymq_messages_delivered_total", map[string]string{"vhost": "/", "kind": "get_manual_ack"}, 1},
		{"ferrymq_messages_delivered_total", map[string]string{"vhost": "/", "kind": "consume_auto_ack"}, 4},
		{"ferrymq_messages_acknowledged_total", map[string]string{"vhost": "/"}, 1},
		{"ferrymq_messages_dropped_total", map[string]string{"vhost": "/", "reason": "expired"}, 0},
		{"ferrymq_queues", map[string]string{"vhost": "/"}, 2},
		{"ferrymq_queue_messages_ready", map[string]string{"vhost": "/"}, 0},
		{"ferrymq_consumers", map[string]string{"vhost": "/", "protocol": "mqtt"}, 1},
		{"ferrymq_consumers", map[string]string{"vhost": "/", "protocol": "amqp"}, 0},
		{"ferrymq_connections", map[string]string{"protocol": "amqp"}, 0},
		{"ferrymq_alarm", map[string]string{"resource": "disk"}, 0},
		{"ferrymq_bridge_connected", map[string]string{"bridge": "uplink"}, 1},
		{"ferrymq_bridge_backlog_messages", map[string]string{"bridge": "uplink"}, 3},
		{"ferrymq_bridge_forwarded_total", map[string]string{"bridge": "uplink"}, 42},
		{"ferrymq_bridge_last_error_timestamp_seconds", map[string]string{"bridge": "uplink"}, 1700000000},
		{"ferrymq_mqtt_sessions_lost_total", nil, 2},
		{"ferrymq_mqtt_deliveries_too_large_total", nil, 5},
		{"ferrymq_build_info", map[string]string{"version": "test"}, 1},
	} {
		if got := value(t, fams, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := value(t, fams, "ferrymq_store_fsyncs_total", nil); got < 5 {
		t.Errorf("store fsyncs %v, want >= 5 (one per synced publish)", got)
	}
	if got := value(t, fams, "ferrymq_store_commit_duration_seconds", nil); got < 5 {
		t.Errorf("commit-time histogram count %v, want >= 5", got)
	}
	for _, name := range []string{"ferrymq_store_batch_ops", "ferrymq_store_vlog_bytes", "go_goroutines", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s", name)
		}
	}
	if fams["ferrymq_queue_ready"] != nil {
		t.Error("/metrics has per-queue series; they belong on /metrics/per-object only")
	}

	per, _ := scrape(t, e, PerObjectPath)
	if got := value(t, per, "ferrymq_queue_messages_published_total", map[string]string{"vhost": "/", "queue": "jobs"}); got != 5 {
		t.Errorf("per-object published for jobs = %v, want 5", got)
	}
	if got := value(t, per, "ferrymq_queue_consumers", map[string]string{"queue": "jobs"}); got != 1 {
		t.Errorf("per-object consumers for jobs = %v, want 1", got)
	}
	if per["ferrymq_messages_published_total"] == nil {
		t.Error("/metrics/per-object lacks the aggregated metrics")
	}

	problems, err := testutil.GatherAndLint(e.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		// The Go and process collectors are client_golang's own.
		if strings.HasPrefix(p.Metric, "ferrymq_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

// TestAlarmSeries: ferrymq_alarm is 1 for a resource while its alarm is
// raised, 0 once it clears, and the other resource's series stays 0.
func TestAlarmSeries(t *testing.T) {
	for _, c := range []struct{ resource, other string }{
		{core.AlarmMemory, core.AlarmDisk},
		{core.AlarmDisk, core.AlarmMemory},
	} {
		t.Run(c.resource, func(t *testing.T) {
			b := core.NewBroker(core.Options{})
			defer b.Close()
			e := New(Sources{Broker: b, Version: "test"})
			check := func(when string, want, wantOther float64) {
				t.Helper()
				fams, _ := scrape(t, e, Path)
				if got := value(t, fams, "ferrymq_alarm", map[string]string{"resource": c.resource}); got != want {
					t.Errorf("%s: ferrymq_alarm{resource=%q} = %v, want %v", when, c.resource, got, want)
				}
				if got := value(t, fams, "ferrymq_alarm", map[string]string{"resource": c.other}); got != wantOther {
					t.Errorf("%s: ferrymq_alarm{resource=%q} = %v, want %v", when, c.other, got, wantOther)
				}
			}
			check("before", 0, 0)
			b.Block(c.resource, "test")
			check("blocked", 1, 0)
			b.Unblock(c.resource)
			check("unblocked", 0, 0)
		})
	}
}

// TestSizeWith10kQueues: /metrics does not grow with the number of queues
// (the bound: under 100 KB with 10,000 queues), while
// /metrics/per-object does.
func TestSizeWith10kQueues(t *testing.T) {
	b := core.NewBroker(core.Options{})
	defer b.Close()
	v := b.VHost("/")
	for i := range 10000 {
		if _, err := v.DeclareQueue(core.QueueDecl{Name: fmt.Sprintf("sensor-%05d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	e := New(Sources{Broker: b, Version: "test"})
	_, size := scrape(t, e, Path)
	_, perSize := scrape(t, e, PerObjectPath)
	t.Logf("10,000 queues: /metrics %d bytes, /metrics/per-object %d bytes", size, perSize)
	if size >= 100_000 {
		t.Errorf("/metrics is %d bytes with 10,000 queues, want < 100 KB", size)
	}
	if perSize < 10000*100 {
		t.Errorf("/metrics/per-object is only %d bytes: per-queue series missing?", perSize)
	}
}
