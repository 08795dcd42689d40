package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/core"
	"github.com/ferrymq/ferrymq/mqtt"
	"github.com/ferrymq/ferrymq/persistence"
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// protocolLabel turns a connection's protocol as the registry names it
// ("AMQP 0-9-1", "MQTT 5.0", or "amqp", "mqtt") into the label value
// "amqp" or "mqtt", so that series do not split by protocol version.
func protocolLabel(p string) string {
	l := strings.ToLower(p)
	switch {
	case strings.HasPrefix(l, "amqp"):
		return "amqp"
	case strings.HasPrefix(l, "mqtt"):
		return "mqtt"
	case l == "":
		return "other"
	}
	return l
}

// Delivery kinds, as RabbitMQ splits its delivered counters.
var deliveredKinds = [...]string{"consume_manual_ack", "consume_auto_ack", "get_manual_ack", "get_auto_ack"}

var (
	descConnections = desc("ferrymq_connections", "Open client connections.", "protocol")
	descChannels    = desc("ferrymq_channels", "Open AMQP channels.", "protocol")
	descConsumers   = desc("ferrymq_consumers", "Consumers: AMQP basic.consume, MQTT session queues, bridge links.", "vhost", "protocol")
	descQueues      = desc("ferrymq_queues", "Queues.", "vhost")
	descReady       = desc("ferrymq_queue_messages_ready", "Messages ready for delivery, all queues of the vhost.", "vhost")
	descReadyBytes  = desc("ferrymq_queue_messages_ready_bytes", "Body bytes of the ready messages, all queues of the vhost.", "vhost")
	descUnacked     = desc("ferrymq_queue_messages_unacked", "Messages delivered and not yet acknowledged, all queues of the vhost.", "vhost")

	descPublished    = desc("ferrymq_messages_published_total", "Messages published by clients (AMQP basic.publish, MQTT PUBLISH, bridges, the HTTP API), routed or not.", "vhost")
	descUnroutable   = desc("ferrymq_messages_unroutable_total", "Published messages that reached no queue (returned if mandatory, else dropped).", "vhost")
	descEnqueued     = desc("ferrymq_messages_enqueued_total", "Messages put in queues (a message routed to three queues counts three; dead letters too).", "vhost")
	descDelivered    = desc("ferrymq_messages_delivered_total", "Messages handed to consumers or basic.get, by kind.", "vhost", "kind")
	descGetEmpty     = desc("ferrymq_messages_get_empty_total", "basic.get that found the queue empty.", "vhost")
	descAcked        = desc("ferrymq_messages_acknowledged_total", "Deliveries acknowledged by consumers.", "vhost")
	descRedelivered  = desc("ferrymq_messages_redelivered_total", "Deliveries of messages delivered before (requeued, or unacknowledged at a restart).", "vhost")
	descDropped      = desc("ferrymq_messages_dropped_total", "Messages lost, by reason (a message dead-lettered instead is counted in ferrymq_messages_dead_lettered_total).", "vhost", "reason")
	descDeadLettered = desc("ferrymq_messages_dead_lettered_total", "Messages republished to a dead-letter exchange, by reason.", "vhost", "reason")

	descAlarm         = desc("ferrymq_alarm", "1 while the resource alarm is in effect (publishers are blocked).", "resource")
	descResidentBytes = desc("ferrymq_resident_message_bytes", "Bytes of stored message bodies held in memory (what --memory-budget limits).")
)

// brokerCollector reads core's figures: connections by protocol, and per
// vhost its counters and queue totals. Its output does not grow with the
// number of queues.
type brokerCollector struct{ b *core.Broker }

func (c *brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descConnections, descChannels, descConsumers, descQueues, descReady,
		descReadyBytes, descUnacked, descPublished, descUnroutable, descEnqueued, descDelivered, descGetEmpty,
		descAcked, descRedelivered, descDropped, descDeadLettered, descAlarm, descResidentBytes} {
		ch <- d
	}
}

func (c *brokerCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	// Both protocols always appear, at 0 when idle, so that dashboards and
	// alerts see a series rather than nothing.
	conns := map[string][2]int{"amqp": {}, "mqtt": {}}
	for _, pc := range c.b.ConnectionCounts() {
		l := protocolLabel(pc.Protocol)
		n := conns[l]
		n[0] += pc.Connections
		n[1] += pc.Channels
		conns[l] = n
	}
	for p, n := range conns {
		gauge(descConnections, float64(n[0]), p)
		gauge(descChannels, float64(n[1]), p)
	}
	for _, vc := range c.b.VHostCounters() {
		v := vc.VHost
		t := vc.Totals
		consumers := map[string]int{"amqp": 0, "mqtt": 0}
		for p, n := range t.ConsumersBy {
			consumers[protocolLabel(p)] += n
		}
		for p, n := range consumers {
			gauge(descConsumers, float64(n), v, p)
		}
		gauge(descQueues, float64(t.Queues), v)
		gauge(descReady, float64(t.Ready), v)
		gauge(descReadyBytes, float64(t.ReadyBytes), v)
		gauge(descUnacked, float64(t.Unacked), v)
		q := vc.Queues
		counter(descPublished, vc.Published, v)
		counter(descUnroutable, vc.Unroutable, v)
		counter(descEnqueued, q.Published, v)
		for i, n := range [...]uint64{q.Delivered, q.DeliveredNoAck, q.Got, q.GotNoAck} {
			counter(descDelivered, n, v, deliveredKinds[i])
		}
		counter(descGetEmpty, q.GetEmpty, v)
		counter(descAcked, q.Acked, v)
		counter(descRedelivered, q.Redelivered, v)
		for r := range core.NumDropReasons {
			counter(descDropped, vc.Dropped[r], v, r.String())
		}
		for _, r := range []core.DropReason{core.DropExpired, core.DropMaxLen, core.DropRejected} {
			counter(descDeadLettered, vc.DeadLettered[r], v, r.String())
		}
	}
	alarms := map[string]float64{core.AlarmDisk: 0, core.AlarmMemory: 0}
	for _, a := range c.b.Alarms() {
		alarms[a.Resource] = 1
	}
	for r, on := range alarms {
		gauge(descAlarm, on, r)
	}
	gauge(descResidentBytes, float64(c.b.ResidentBytes()))
}

var (
	descQReady       = desc("ferrymq_queue_ready", "Messages ready for delivery in the queue.", "vhost", "queue")
	descQReadyBytes  = desc("ferrymq_queue_ready_bytes", "Body bytes of the queue's ready messages.", "vhost", "queue")
	descQUnacked     = desc("ferrymq_queue_unacked", "Messages delivered from the queue and not yet acknowledged.", "vhost", "queue")
	descQConsumers   = desc("ferrymq_queue_consumers", "Consumers of the queue.", "vhost", "queue")
	descQPublished   = desc("ferrymq_queue_messages_published_total", "Messages put in the queue.", "vhost", "queue")
	descQDelivered   = desc("ferrymq_queue_messages_delivered_total", "Messages handed out by the queue, to consumers and basic.get.", "vhost", "queue")
	descQAcked       = desc("ferrymq_queue_messages_acknowledged_total", "Deliveries from the queue acknowledged.", "vhost", "queue")
	descQRedelivered = desc("ferrymq_queue_messages_redelivered_total", "Redeliveries from the queue.", "vhost", "queue")
	descQDiscarded   = desc("ferrymq_queue_messages_discarded_total", "Messages the queue dropped or refused: x-max-length drop-head, backlog limit, memory alarm.", "vhost", "queue")
)

// queueCollector adds one set of series per queue, for /metrics/per-object.
type queueCollector struct{ b *core.Broker }

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descQReady, descQReadyBytes, descQUnacked, descQConsumers,
		descQPublished, descQDelivered, descQAcked, descQRedelivered, descQDiscarded} {
		ch <- d
	}
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	// Copied first: sending to ch while holding a vhost's topology lock
	// would make declarations wait on the scrape's reader.
	for _, f := range c.b.QueueFigures() {
		l := []string{f.VHost, f.Name}
		g := func(d *prometheus.Desc, x float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, x, l...)
		}
		k := func(d *prometheus.Desc, x uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(x), l...)
		}
		g(descQReady, float64(f.Messages))
		g(descQReadyBytes, float64(f.Bytes))
		g(descQUnacked, float64(f.Unacked))
		g(descQConsumers, float64(f.Consumers))
		k(descQPublished, f.Counters.Published)
		k(descQDelivered, f.Counters.DeliverGet())
		k(descQAcked, f.Counters.Acked)
		k(descQRedelivered, f.Counters.Redelivered)
		k(descQDiscarded, f.Dropped+f.Discarded)
	}
}

var (
	descFsyncs       = desc("ferrymq_store_fsyncs_total", "Store commits, each ending with one fsync shared by every write in its batch.")
	descCommitErrors = desc("ferrymq_store_commit_errors_total", "Store commits that failed (retried with the next batch).")
	descBatchOps     = desc("ferrymq_store_batch_ops", "Writes (enqueues, removals, topology changes) per store commit.")
	descCommitTime   = desc("ferrymq_store_commit_duration_seconds", "Time to write a batch and fsync it.")
	descGCRuns       = desc("ferrymq_store_gc_runs_total", "Value-log garbage collection passes.")
	descGCRewritten  = desc("ferrymq_store_gc_files_rewritten_total", "Value-log files rewritten (space given back) by GC.")
	descVLogBytes    = desc("ferrymq_store_vlog_bytes", "Disk space taken by the store's value log.")
	descLSMBytes     = desc("ferrymq_store_lsm_bytes", "Disk space taken by the store's LSM tree.")
)

// storeCollector reads persistence.Store.Stats.
type storeCollector struct{ s *persistence.Store }

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFsyncs, descCommitErrors, descBatchOps, descCommitTime,
		descGCRuns, descGCRewritten, descVLogBytes, descLSMBytes} {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	counter(descFsyncs, st.Commits)
	counter(descCommitErrors, st.CommitErrors)
	counter(descGCRuns, st.GCRuns)
	counter(descGCRewritten, st.GCFilesRewritten)
	ch <- prometheus.MustNewConstMetric(descVLogBytes, prometheus.GaugeValue, float64(st.VLogBytes))
	ch <- prometheus.MustNewConstMetric(descLSMBytes, prometheus.GaugeValue, float64(st.LSMBytes))
	ch <- constHistogram(descBatchOps, st.BatchOps)
	ch <- constHistogram(descCommitTime, st.CommitSeconds)
}

// constHistogram turns the store's per-bucket counts into Prometheus's
// cumulative ones.
func constHistogram(d *prometheus.Desc, h persistence.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, b := range h.Bounds {
		cum += h.Buckets[i]
		buckets[b] = cum
	}
	// The snapshot is not atomic across fields: keep the count at least
	// the last bucket, as Prometheus requires.
	return prometheus.MustNewConstHistogram(d, max(h.Count, cum), h.Sum, buckets)
}

var (
	descBridgeConnected    = desc("ferrymq_bridge_connected", "1 while the bridge link is connected to its upstream.", "bridge")
	descBridgePaused       = desc("ferrymq_bridge_paused", "1 while an operator has paused the bridge link.", "bridge")
	descBridgeBacklog      = desc("ferrymq_bridge_backlog_messages", "Messages waiting to be forwarded upstream (ready or awaiting the upstream's confirm).", "bridge")
	descBridgeBacklogBytes = desc("ferrymq_bridge_backlog_bytes", "Body bytes of the messages waiting to be forwarded.", "bridge")
	descBridgeForwarded    = desc("ferrymq_bridge_forwarded_total", "Messages forwarded and confirmed by the upstream.", "bridge")
	descBridgeReceived     = desc("ferrymq_bridge_received_total", "Messages taken in from the upstream.", "bridge")
	descBridgeDropped      = desc("ferrymq_bridge_dropped_total", "Messages dropped by a full store-and-forward buffer (overflow drop-oldest).", "bridge")
	descBridgeLoopsCut     = desc("ferrymq_bridge_loops_cut_total", "Messages not forwarded because they had already crossed this node.", "bridge")
	descBridgeRefused      = desc("ferrymq_bridge_refused_total", "Messages the upstream refused for good (MQTT 5 PUBACK 0x83, 0x87, 0x90, 0x99 or over its Maximum Packet Size; AMQP channel exception 403, 406; MQTT 3.1.1 connection closed right after it, alone in flight, 3 times in a row): acked here and not sent again.", "bridge")
	descBridgeQueueLost    = desc("ferrymq_bridge_queue_lost_total", "Times the link's store-and-forward queue was found deleted and made again.", "bridge")
	descBridgeLastError    = desc("ferrymq_bridge_last_error_timestamp_seconds", "When the link last failed (connect or connection lost), Unix time; 0 if never.", "bridge")
)

// bridgeCollector reads the bridge links' Status.
type bridgeCollector struct{ status func() []bridge.Status }

func (c *bridgeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBridgeConnected, descBridgePaused, descBridgeBacklog, descBridgeBacklogBytes,
		descBridgeForwarded, descBridgeReceived, descBridgeDropped, descBridgeLoopsCut, descBridgeRefused, descBridgeQueueLost, descBridgeLastError} {
		ch <- d
	}
}

func (c *bridgeCollector) Collect(ch chan<- prometheus.Metric) {
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for _, s := range c.status() {
		g := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, s.Name)
		}
		k := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), s.Name)
		}
		g(descBridgeConnected, b2f(s.Connected))
		g(descBridgePaused, b2f(s.Paused))
		g(descBridgeBacklog, float64(s.Backlog))
		g(descBridgeBacklogBytes, float64(s.BacklogBytes))
		k(descBridgeForwarded, s.Forwarded)
		k(descBridgeReceived, s.Received)
		k(descBridgeDropped, s.Dropped)
		k(descBridgeLoopsCut, s.LoopsCut)
		k(descBridgeRefused, s.Refused)
		k(descBridgeQueueLost, s.QueueLost)
		var at float64
		if !s.LastErrorAt.IsZero() {
			at = float64(s.LastErrorAt.UnixNano()) / 1e9
		}
		g(descBridgeLastError, at)
	}
}

var (
	descMQTTSessionsLost = desc("ferrymq_mqtt_sessions_lost_total", "MQTT sessions whose queue was deleted under them (by an administrator or an AMQP client), each logged at WARN and started afresh, its queued messages lost.")
	descMQTTTooLarge     = desc("ferrymq_mqtt_deliveries_too_large_total", "MQTT deliveries not sent because the PUBLISH would exceed the client's Maximum Packet Size.")
)

// mqttCollector reads the MQTT server's Stats.
type mqttCollector struct{ stats func() mqtt.Stats }

func (c *mqttCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMQTTSessionsLost
	ch <- descMQTTTooLarge
}

func (c *mqttCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	ch <- prometheus.MustNewConstMetric(descMQTTSessionsLost, prometheus.CounterValue, float64(st.SessionsLost))
	ch <- prometheus.MustNewConstMetric(descMQTTTooLarge, prometheus.CounterValue, float64(st.DroppedTooLarge))
}
