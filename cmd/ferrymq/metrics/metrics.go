// Package metrics serves ferrymq's Prometheus metrics, in the text format,
// through prometheus/client_golang.
//
// Two endpoints, as RabbitMQ's prometheus plugin has them:
//
//   - /metrics: everything aggregated (per protocol, per vhost, per
//     bridge, the store, the Go runtime and the process), so its size does
//     not grow with the number of queues: ~20 KB with 10,000 queues.
//   - /metrics/per-object: the same plus one series set per queue (depth,
//     unacked, bytes, consumers, message counters), opt-in by scraping it,
//     for small deployments or targeted debugging.
//
// Every figure is read at scrape time from what core, the store and the
// bridges keep anyway (core.VHost.Counters, persistence.Store.Stats,
// bridge.Manager.Status, mqtt.Server.Stats): nothing is counted twice, and nothing on the
// message path knows about Prometheus.
package metrics

import (
	"net/http"
	"runtime"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt"
	"github.com/ferrymq/ferrymq/persistence"
)

// Paths of the two endpoints.
const (
	Path          = "/metrics"
	PerObjectPath = "/metrics/per-object"
)

// Sources are what the metrics are read from. Broker is required; the
// others may be nil.
type Sources struct {
	Broker *core.Broker
	// Store, if set, adds the ferrymq_store_* metrics.
	Store *persistence.Store
	// Bridges, if set, lists the bridge links (bridge.Manager.Status).
	Bridges func() []bridge.Status
	// MQTT, if set, adds the ferrymq_mqtt_* metrics (mqtt.Server.Stats).
	MQTT func() mqtt.Stats
	// Version is the broker's version, for ferrymq_build_info.
	Version string
}

// Exporter holds the two registries. It is safe for concurrent scrapes.
type Exporter struct {
	aggregate, perObject *prometheus.Registry
	aggHTTP, perHTTP     http.Handler
}

// New returns an Exporter reading from src.
func New(src Sources) *Exporter {
	common := []prometheus.Collector{
		&brokerCollector{b: src.Broker},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "ferrymq_build_info",
			Help:        "Always 1; the labels say which ferrymq and Go built this broker.",
			ConstLabels: prometheus.Labels{"version": src.Version, "goversion": runtime.Version()},
		}, func() float64 { return 1 }),
	}
	if src.Store != nil {
		common = append(common, &storeCollector{s: src.Store})
	}
	if src.Bridges != nil {
		common = append(common, &bridgeCollector{status: src.Bridges})
	}
	if src.MQTT != nil {
		common = append(common, &mqttCollector{stats: src.MQTT})
	}
	e := &Exporter{aggregate: prometheus.NewRegistry(), perObject: prometheus.NewRegistry()}
	e.aggregate.MustRegister(common...)
	e.perObject.MustRegister(common...)
	e.perObject.MustRegister(&queueCollector{b: src.Broker})
	// ContinueOnError: a collector's error (none of ours returns one
	// today) still serves the rest, as a partial scrape beats none.
	opts := promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}
	e.aggHTTP = promhttp.HandlerFor(e.aggregate, opts)
	e.perHTTP = promhttp.HandlerFor(e.perObject, opts)
	return e
}

// Handler serves the aggregated metrics (Path).
func (e *Exporter) Handler() http.Handler { return e.aggHTTP }

// PerObjectHandler serves the aggregated metrics and the per-queue ones
// (PerObjectPath).
func (e *Exporter) PerObjectHandler() http.Handler { return e.perHTTP }

// ServeHTTP serves Path and PerObjectPath (and 404 for anything else), so
// that the Exporter can be mounted as one handler on both paths.
func (e *Exporter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimSuffix(r.URL.Path, "/") {
	case Path:
		e.aggHTTP.ServeHTTP(w, r)
	case PerObjectPath:
		e.perHTTP.ServeHTTP(w, r)
	default:
		http.NotFound(w, r)
	}
}

// Registry returns the aggregated registry, for tests that gather it.
func (e *Exporter) Registry() *prometheus.Registry { return e.aggregate }
