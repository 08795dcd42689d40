package main

import (
	"fmt"
	"strings"
)

// target is issue 6's goal for one scenario.
type target struct {
	text  string
	ref   string  // broker the ratio must beat
	ratio float64 // higher-is-better metrics: ferrymq ≥ ratio × ref
}

func targetFor(p planned) target {
	switch p.sc.name {
	case "amqp-1to1":
		if p.size >= 1024 {
			return target{"≥ 4× RabbitMQ", "rabbitmq", 4}
		}
		return target{"≥ 5× RabbitMQ", "rabbitmq", 5}
	case "amqp-confirm-persistent":
		return target{"≥ 2× RabbitMQ, with fsync before confirm", "rabbitmq", 2}
	case "amqp-fanout10":
		return target{"≥ 4× RabbitMQ", "rabbitmq", 4}
	case "mqtt-qos0-1to1", "mqtt-qos1-1to1", "mqtt-fanin-100":
		return target{"≥ 1.5× Mosquitto, nothing lost", "mosquitto", 1.5}
	case "mqtt-to-amqp-qos0", "mqtt-to-amqp-qos1", "amqp-to-mqtt-qos0", "amqp-to-mqtt-qos1":
		return target{"≥ 5× RabbitMQ", "rabbitmq", 5}
	case "latency-amqp", "latency-mqtt-qos0":
		return target{"p50 ≤ Mosquitto's MQTT QoS 0 p50", "mosquitto", 0}
	case "idle-mqtt-conns":
		return target{"≤ 8 KiB per connection", "", 0}
	case topologyName:
		return target{"routing still fast: ≥ 4× RabbitMQ", "rabbitmq", 4}
	case mgmtQueuesName:
		return target{"p50 < 100 ms, /metrics < 100 KB (issue 12)", "", 0}
	}
	return target{}
}

// targetMet says whether ferrymq's cell meets t: yes, no, or – when the
// reference broker did not run.
func targetMet(p planned, t target, fm *cellStats, cells map[string]*cellStats, rep *report) string {
	if fm.failed > 0 && p.sc.name == "idle-mqtt-conns" {
		return "no (the run failed)"
	}
	if fm.failed > 0 || fm.lostConf > 0 {
		return "no (delivery failures)"
	}
	yesNo := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "no"
	}
	switch {
	case p.sc.name == "idle-mqtt-conns":
		if fm.perConn <= 0 {
			return "–"
		}
		return yesNo(fm.perConn <= 8)
	case p.sc.name == mgmtQueuesName:
		if fm.p50 <= 0 {
			return "–"
		}
		if fm.metricsBytes == 0 {
			return yesNo(fm.p50 < float64(mgmtTarget.Microseconds())) + " (/metrics not read)"
		}
		return fmt.Sprintf("%s (/metrics %.1f KB)",
			yesNo(fm.p50 < float64(mgmtTarget.Microseconds()) && fm.metricsBytes < mgmtMetricsTarget), float64(fm.metricsBytes)/1000)
	case strings.HasPrefix(p.sc.name, "latency-"):
		// The reference is Mosquitto's MQTT QoS 0 p50, for both protocols.
		for _, q := range rep.plan {
			if q.sc.name == "latency-mqtt-qos0" {
				if ref := rep.stats(q, "mosquitto"); ref != nil && ref.p50 > 0 && fm.p50 > 0 {
					return yesNo(fm.p50 <= ref.p50)
				}
			}
		}
		return "–"
	}
	ref := cells[t.ref]
	if ref == nil || ref.rate == 0 {
		return "–"
	}
	return yesNo(fm.rate >= t.ratio*ref.rate)
}
