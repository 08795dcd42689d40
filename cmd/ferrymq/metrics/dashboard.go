package metrics

import _ "embed"

// GrafanaDashboard is a Grafana dashboard (JSON, schema 39, Prometheus
// data source chosen on import) over the metrics this package serves.
//
//go:embed grafana-dashboard.json
var GrafanaDashboard []byte
