package mgmt

import (
	"cmp"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// productName is what /api/overview reports as product_name.
const productName = "ferrymq"

// managementVersion is the RabbitMQ management API version whose shapes
// this API follows; clients (rabbitmqadmin) compare it.
const managementVersion = "3.10.8"

type listenerJSON struct {
	Node       string         `json:"node"`
	Protocol   string         `json:"protocol"`
	IPAddress  string         `json:"ip_address"`
	Port       int            `json:"port"`
	SocketOpts map[string]any `json:"socket_opts"`
}

// rabbitProtocol names a ferrymq listener as RabbitMQ's listeners list does.
func rabbitProtocol(p string) string {
	switch p {
	case "amqp":
		return "amqp"
	case "amqps":
		return "amqp/ssl"
	case "mqtts":
		return "mqtt/ssl"
	case "mqtt-ws":
		return "http/web-mqtt"
	case "mqtt-wss":
		return "https/web-mqtt"
	}
	return p
}

func (s *Server) listenersJSON() []listenerJSON {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	out := []listenerJSON{}
	for _, l := range s.listeners {
		if l.Protocol == "debug" {
			continue // pprof: not a protocol listener
		}
		host, port, _ := net.SplitHostPort(l.Addr.String())
		n, _ := strconv.Atoi(port)
		out = append(out, listenerJSON{Node: s.node(), Protocol: rabbitProtocol(l.Protocol), IPAddress: host, Port: n, SocketOpts: map[string]any{}})
	}
	return out
}

func (s *Server) node() string {
	if s.opts.Node != "" {
		return s.opts.Node
	}
	h, _ := os.Hostname()
	return "ferrymq@" + h
}

// totals counts the objects the user may see.
type totals struct {
	Channels    int `json:"channels"`
	Connections int `json:"connections"`
	Consumers   int `json:"consumers"`
	Exchanges   int `json:"exchanges"`
	Queues      int `json:"queues"`
}

type queueTotals struct {
	Messages        int `json:"messages"`
	MessagesReady   int `json:"messages_ready"`
	MessagesUnacked int `json:"messages_unacknowledged"`
}

func (s *Server) overview(w http.ResponseWriter, r *Request) {
	b := s.opts.Broker
	var ot totals
	var qt queueTotals
	var total, rate counts
	for _, vh := range b.VHostNames() {
		if !r.vhostAllowed(vh) {
			continue
		}
		v := b.VHost(vh)
		if v == nil {
			continue
		}
		c := v.Counters()
		ot.Exchanges += v.ExchangeCount()
		ot.Queues += c.Totals.Queues
		ot.Consumers += c.Totals.Consumers
		qt.MessagesReady += c.Totals.Ready
		qt.MessagesUnacked += c.Totals.Unacked
		total.add(fromCounters(c.Published, c.Queues))
		rate.add(s.vhostRate(vh))
	}
	qt.Messages = qt.MessagesReady + qt.MessagesUnacked
	for _, c := range b.Connections() {
		if r.seesConn(c) {
			ot.Connections++
			ot.Channels += chanCount(c)
		}
	}
	ov := map[string]any{
		"management_version":            managementVersion,
		"rates_mode":                    "basic",
		"sample_retention_policies":     map[string][]int{"global": {600, 3600, 28800, 86400}, "basic": {600, 3600}, "detailed": {600}},
		"exchange_types":                exchangeTypes(),
		"product_version":               cmp.Or(s.opts.Version, "unknown"),
		"product_name":                  productName,
		"rabbitmq_version":              managementVersion,
		"cluster_name":                  s.node(),
		"erlang_version":                runtime.Version(),
		"erlang_full_version":           runtime.Version(),
		"release_series_support_status": "supported",
		"disable_stats":                 false,
		"is_op_policy_updating_enabled": false,
		"enable_queue_totals":           true,
		"queue_totals":                  qt,
		"object_totals":                 ot,
		"statistics_db_event_queue":     0,
		"node":                          s.node(),
		"listeners":                     s.listenersJSON(),
		"contexts":                      []map[string]any{},
		"message_stats":                 messageStats(total, rate),
		"churn_rates":                   map[string]any{},
	}
	writeJSON(w, http.StatusOK, ov)
}

func exchangeTypes() []map[string]any {
	var out []map[string]any
	for _, t := range []struct{ name, desc string }{
		{"direct", "AMQP direct exchange, as per the AMQP specification"},
		{"fanout", "AMQP fanout exchange, as per the AMQP specification"},
		{"headers", "AMQP headers exchange, as per the AMQP specification"},
		{"topic", "AMQP topic exchange, as per the AMQP specification"},
	} {
		out = append(out, map[string]any{"name": t.name, "description": t.desc, "enabled": true})
	}
	return out
}

func (s *Server) whoami(w http.ResponseWriter, r *Request) {
	tags := r.User.Tags
	if tags == nil {
		tags = []string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": r.User.Name, "tags": tags})
}

func (s *Server) nodeJSON() map[string]any {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	node := map[string]any{
		"name":            s.node(),
		"type":            "disc",
		"running":         true,
		"uptime":          time.Since(s.started).Milliseconds(),
		"mem_used":        ms.Sys,
		"mem_alarm":       alarmed(s.opts.Broker, core.AlarmMemory),
		"disk_free_alarm": alarmed(s.opts.Broker, core.AlarmDisk),
		"proc_used":       runtime.NumGoroutine(),
		"processors":      runtime.NumCPU(),
		"run_queue":       0,
		"os_pid":          strconv.Itoa(os.Getpid()),
		"rates_mode":      "basic",
		"being_drained":   false,
		"partitions":      []string{},
		"applications":    []any{},
		"exchange_types":  exchangeTypes(),
	}
	if s.opts.FDTotal > 0 {
		node["fd_total"] = s.opts.FDTotal
	}
	if s.opts.SocketsTotal > 0 {
		node["sockets_total"] = s.opts.SocketsTotal
		node["sockets_used"] = s.opts.Broker.ConnectionCount()
	}
	return node
}

func (s *Server) nodes(w http.ResponseWriter, r *Request) {
	writeJSON(w, http.StatusOK, []map[string]any{s.nodeJSON()})
}

func (s *Server) nodeOne(w http.ResponseWriter, r *Request) {
	if r.Var("node") != s.node() {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, s.nodeJSON())
}
