package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// report is bench/results.md.
type report struct {
	started time.Time
	elapsed time.Duration
	reps    int
	cfg     *config
	brokers []*brokerProc
	plan    []planned
	results []result
	notes   []string

	large        *planned // the --conns-large cell, or nil
	largeBrokers []string // --conns-large-brokers
	largeNotRun  string   // why the --conns-large cell did not run, if it did not

	topologyBrokers []string // --topology-brokers
}

// cellStats are the medians of one scenario on one broker.
type cellStats struct {
	runs, failed        int
	rate, p50, p99      float64
	perConn             float64
	perQueue            float64 // amqp-topology-10k: KiB RSS per queue
	lost, lostConf, dup int64
	rss                 int64
	cpu, clientCPU      float64
	otherCPU            float64
	errors              []string
	warnings            []string
	opened, conns       int64 // idle-mqtt-conns: summed over the runs
	metricsBytes        int   // mgmt-queues-10k: the largest /metrics read
}

func (rep *report) stats(p planned, broker string) *cellStats {
	var c cellStats
	var rates, p50s, p99s, perConns, perQueues, cpus, ccpus, ocpus []float64
	for _, r := range rep.results {
		if r.Scenario != p.name() || r.Size != p.size || r.Broker != broker {
			continue
		}
		c.runs++
		if !r.OK {
			c.failed++
			c.errors = append(c.errors, r.Error)
		}
		if r.Warning != "" {
			c.warnings = append(c.warnings, r.Warning)
		}
		if r.MsgPerSec > 0 {
			rates = append(rates, r.MsgPerSec)
			p50s = append(p50s, r.P50us)
			p99s = append(p99s, r.P99us)
		}
		if r.RSSPerConnKiB != 0 {
			perConns = append(perConns, r.RSSPerConnKiB)
		}
		if r.RSSPerQueueKiB != 0 {
			perQueues = append(perQueues, r.RSSPerQueueKiB)
		}
		cpus = append(cpus, r.CPUPct)
		ccpus = append(ccpus, r.ClientCPUPct)
		ocpus = append(ocpus, r.OtherCPUPct)
		c.lost += r.Lost
		c.lostConf += r.LostConfirmed
		c.dup += r.Dup
		c.rss = max(c.rss, r.RSSKiB)
		c.opened += r.Opened
		c.conns += int64(r.Conns)
		c.metricsBytes = max(c.metricsBytes, r.MetricsBytes)
	}
	if c.runs == 0 {
		return nil
	}
	c.rate, c.p50, c.p99 = median(rates), median(p50s), median(p99s)
	c.perConn, c.cpu, c.clientCPU, c.otherCPU = median(perConns), median(cpus), median(ccpus), median(ocpus)
	c.perQueue = median(perQueues)
	return &c
}

var brokerTitles = map[string]string{"ferrymq": "ferrymq", "rabbitmq": "RabbitMQ", "mosquitto": "Mosquitto"}

func title(b string) string {
	if t, ok := brokerTitles[b]; ok {
		return t
	}
	return b
}

func variant(p planned) string {
	if p.sc.name == "idle-mqtt-conns" {
		return p.name()
	}
	if p.size >= 1024 && p.size%1024 == 0 {
		return fmt.Sprintf("%s (%d KiB)", p.sc.name, p.size/1024)
	}
	return fmt.Sprintf("%s (%d B)", p.sc.name, p.size)
}

func (rep *report) write(w io.Writer) {
	fmt.Fprintf(w, "# ferrymq benchmark results\n\n")
	fmt.Fprintf(w, "Written by `make bench` (`ferrybench --orchestrate`) on %s, in %s.\n\n",
		rep.started.UTC().Format("2006-01-02 15:04 UTC"), rep.elapsed.Round(time.Second))
	fmt.Fprintf(w, "- Machine: %s\n", machine())
	fmt.Fprintf(w, "- Brokers: ")
	for i, b := range rep.brokers {
		if i > 0 {
			fmt.Fprint(w, "; ")
		}
		fmt.Fprintf(w, "%s `%s`", title(b.name), b.version)
	}
	fmt.Fprintf(w, ". All on 127.0.0.1, started by the orchestrator on free ports with the configs in `bench/`.\n")
	fmt.Fprintf(w, "- Client: ferrybench (%s; amqp091-go, MQTT %s via %s), on the same machine, one process per run.\n",
		runtime.Version(), map[int]string{3: "3.1.1", 5: "5"}[rep.cfg.mqttVersion],
		map[int]string{3: "paho.mqtt.golang", 5: "paho.golang"}[rep.cfg.mqttVersion])
	what := fmt.Sprintf("%s of publishing", rep.cfg.duration)
	if rep.cfg.messages > 0 {
		what = fmt.Sprintf("%d messages", rep.cfg.messages)
	}
	fmt.Fprintf(w, "- Each cell is the median of %d runs (%s each), brokers interleaved run by run; idle-mqtt-conns (%d connections) runs once, first, on the fresh brokers. Window %d, prefetch %d, ack every %d, backlog %d.\n",
		rep.reps, what, rep.cfg.conns, rep.cfg.window, rep.cfg.prefetch, rep.cfg.ackEvery, rep.cfg.backlog)
	if rep.large != nil && rep.largeNotRun == "" {
		fmt.Fprintf(w, "- %s (%d connections) runs once, before everything else, against %s, each started afresh for it and stopped after it (`--conns-large`).",
			rep.large.name(), rep.large.conns, titles(rep.largeBrokers))
		for _, b := range rep.brokers {
			if slices.Contains(rep.largeBrokers, b.name) {
				continue
			}
			est := "it would need too much memory"
			if c := rep.stats(planned{sc: rep.large.sc, size: rep.large.size}, b.name); c != nil && c.perConn > 0 {
				est = fmt.Sprintf("at %.0f KiB per connection (idle-mqtt-conns) it would need %.1f GiB", c.perConn, c.perConn*float64(rep.large.conns)/(1<<20))
			}
			fmt.Fprintf(w, " %s is left out (`--conns-large-brokers`): %s.", title(b.name), est)
		}
		fmt.Fprintln(w)
	}
	if rep.hasTopology() {
		fmt.Fprintf(w, "- %s runs once, before the other runs, against %s, each started afresh for it and stopped after it (`--topology-brokers`); see its section below.\n",
			topologyName, titles(rep.topologyRan()))
	}
	fmt.Fprintf(w, "- Before each run the orchestrator waits until the broker is idle (at most %s) and, for at most %s, until other processes are. They still used a median %.0f%% CPU (of %d00%%) during the runs (`other_cpu_pct`, in the resources table); the numbers move with that.\n",
		settleMax, otherWait, rep.otherCPU(), runtime.NumCPU())
	for _, n := range rep.notes {
		fmt.Fprintf(w, "- Note: %s\n", n)
	}
	names := []string{}
	for _, b := range rep.brokers {
		names = append(names, b.name)
	}

	fmt.Fprintf(w, "\n## Results\n\n")
	fmt.Fprintf(w, "Throughput in messages (deliveries for fanout) per second, higher is better; latency p50 and idle memory, lower is better. ")
	fmt.Fprintf(w, "The ratio is ferrymq / the best other broker: above 1 ferrymq is ahead on throughput, below 1 it is ahead on latency and memory.\n\n")
	fmt.Fprintf(w, "| scenario | unit |")
	for _, n := range names {
		fmt.Fprintf(w, " %s |", title(n))
	}
	fmt.Fprintf(w, " ferrymq / best other | target (issue 6) | met |\n|---|---|")
	for range names {
		fmt.Fprint(w, "---:|")
	}
	fmt.Fprint(w, "---:|---|---|\n")
	type row struct {
		p      planned
		memory bool // amqp-topology-10k's second row: RSS per queue
	}
	var rows []row
	for _, p := range rep.plan {
		rows = append(rows, row{p, false})
		if p.sc.name == topologyName {
			rows = append(rows, row{p, true})
		}
	}
	for _, rw := range rows {
		p := rw.p
		lowerBetter := p.sc.name == "idle-mqtt-conns" || strings.HasPrefix(p.sc.name, "latency-") || rw.memory || p.sc.name == mgmtQueuesName
		unit := p.sc.unit
		label := variant(p)
		value := func(c *cellStats) float64 { return c.rate }
		switch {
		case p.sc.name == "idle-mqtt-conns":
			unit = "KiB RSS / conn"
			value = func(c *cellStats) float64 { return c.perConn }
		case rw.memory:
			label = p.sc.name + " memory"
			unit = "KiB RSS / queue (with its 10 bindings)"
			value = func(c *cellStats) float64 { return c.perQueue }
		case p.sc.name == topologyName:
			label = p.sc.name + " routing" + strings.TrimPrefix(label, p.sc.name)
			unit = "msg/s (confirmed, routed)"
		case lowerBetter:
			unit = "p50 µs (p99)"
			value = func(c *cellStats) float64 { return c.p50 }
		}
		cells := map[string]*cellStats{}
		fmt.Fprintf(w, "| %s | %s |", label, unit)
		if p.conns > 0 && rep.largeNotRun != "" {
			for range names {
				fmt.Fprint(w, " not run |")
			}
			fmt.Fprintf(w, " – | %s | – (not run: see the note above) |\n", targetFor(p).text)
			continue
		}
		for _, n := range names {
			c := rep.stats(p, n)
			cells[n] = c
			switch {
			case c == nil:
				fmt.Fprint(w, " – |")
				continue
			case value(c) == 0 && p.sc.name == "idle-mqtt-conns":
				fmt.Fprintf(w, " failed (%d of %d opened) |", c.opened, c.conns)
				continue
			case value(c) == 0 && rw.memory && c.failed == 0:
				fmt.Fprint(w, " not measured |")
				continue
			case value(c) == 0:
				fmt.Fprint(w, " failed |")
				continue
			}
			s := human(value(c))
			switch {
			case p.sc.name == "idle-mqtt-conns" && c.perConn < 0:
				s = fmt.Sprintf("%.2f (RSS fell: not meaningful)", c.perConn)
			case p.sc.name == "idle-mqtt-conns" && c.opened < c.conns:
				s = fmt.Sprintf("%.2f (only %d of %d opened)", c.perConn, c.opened, c.conns)
			case p.sc.name == "idle-mqtt-conns":
				s = fmt.Sprintf("%.2f", c.perConn)
			case rw.memory && c.perQueue < 0:
				s = fmt.Sprintf("%.2f (RSS fell: not meaningful)", c.perQueue)
			case rw.memory:
				s = fmt.Sprintf("%.2f", c.perQueue)
			case lowerBetter:
				s = fmt.Sprintf("%.0f (%.0f)", c.p50, c.p99)
			}
			if c.lostConf > 0 || c.failed > 0 {
				s += " ⚠"
			}
			fmt.Fprintf(w, " %s |", s)
		}
		// Ratio against the best other broker.
		fm := cells["ferrymq"]
		best := 0.0
		for n, c := range cells {
			if n == "ferrymq" || c == nil || value(c) == 0 {
				continue
			}
			if v := value(c); v < 0 {
				continue
			} else if best == 0 || (lowerBetter && v < best) || (!lowerBetter && v > best) {
				best = v
			}
		}
		ratio := "–"
		if fm != nil && value(fm) > 0 && best > 0 {
			ratio = fmt.Sprintf("%.2f×", value(fm)/best)
		}
		t := targetFor(p)
		met := "–"
		if rw.memory {
			t = target{text: "none; lower is better (reported, as the issue asks)"}
		} else if fm != nil {
			met = targetMet(p, t, fm, cells, rep)
		}
		fmt.Fprintf(w, " %s | %s | %s |\n", ratio, t.text, met)
	}
	fmt.Fprintf(w, "\n⚠: a run of this cell failed or lost acknowledged messages; see the delivery table.\n")

	rep.writeIdle(w)
	rep.writeTopology(w)

	fmt.Fprintf(w, "\n## Delivery checks\n\n")
	fmt.Fprintf(w, "Summed over the runs. Lost counts every published message that never arrived; \"confirmed\" counts those the broker had acknowledged (publisher confirm, PUBACK, or a cleanly closed AMQP channel), which fail the run unless delivery was QoS 0.\n\n")
	fmt.Fprintf(w, "| scenario | broker | runs | failed | lost | lost confirmed | dup | notes |\n|---|---|---:|---:|---:|---:|---:|---|\n")
	for _, p := range rep.plan {
		for _, n := range names {
			c := rep.stats(p, n)
			if c == nil {
				continue
			}
			var why []string
			why = append(why, dedupe(c.errors)...)
			why = append(why, dedupe(c.warnings)...)
			fmt.Fprintf(w, "| %s | %s | %d | %d | %d | %d | %d | %s |\n", variant(p), title(n), c.runs, c.failed, c.lost, c.lostConf, c.dup,
				strings.ReplaceAll(strings.Join(why, "; "), "|", "/"))
		}
	}

	fmt.Fprintf(w, "\n## Resources\n\n")
	fmt.Fprintf(w, "Broker peak RSS (max over runs) and median CPU (percent of one core; the machine has %d), and the load client's median CPU. A client near 100%% per busy goroutine means the client, not the broker, may be the limit.\n\n", runtime.NumCPU())
	fmt.Fprintf(w, "| scenario | broker | peak RSS | broker CPU | client CPU | other processes CPU |\n|---|---|---:|---:|---:|---:|\n")
	for _, p := range rep.plan {
		for _, n := range names {
			c := rep.stats(p, n)
			if c == nil {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %.1f MiB | %.0f%% | %.0f%% | %.0f%% |\n", variant(p), title(n), float64(c.rss)/1024, c.cpu, c.clientCPU, c.otherCPU)
		}
	}

	fmt.Fprintf(w, "\n## All runs\n\n<details><summary>One JSON line per run, as printed by ferrybench --json</summary>\n\n```\n")
	for _, r := range rep.results {
		line, _ := json.Marshal(r)
		fmt.Fprintf(w, "%s\n", line)
	}
	fmt.Fprintf(w, "```\n\n</details>\n")
}

// writeIdle is the table of the idle-mqtt-conns runs: whether every
// connection opened, how fast, and the broker's memory.
func (rep *report) writeIdle(w io.Writer) {
	var runs []result
	for _, p := range rep.plan {
		if p.sc.name != "idle-mqtt-conns" {
			continue
		}
		for _, r := range rep.results {
			if r.Scenario == p.name() {
				runs = append(runs, r)
			}
		}
	}
	if len(runs) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## Idle MQTT connections\n\n")
	fmt.Fprintf(w, "Each run opens its connections (MQTT 3.1.1 CONNECT, clean session, keep alive 600 s) from 32 goroutines, each waiting for its CONNACK; beyond %d connections they come from further 127.0.0.x source addresses. RSS per connection is the broker's RSS growth, read 3 s after the last CONNACK, over the connections opened.\n\n", perSource)
	fmt.Fprintf(w, "| run | broker | opened | time to open | conn/s | broker fd limit | broker RSS before → after | KiB RSS / conn | result |\n|---|---|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range runs {
		fd := "–"
		if r.BrokerNoFile > 0 {
			fd = strconv.FormatInt(r.BrokerNoFile, 10)
		}
		rss, per := rssCells(r.RSSBeforeKiB, r.RSSEndKiB, r.RSSPerConnKiB)
		fmt.Fprintf(w, "| %s | %s | %d of %d | %.1f s | %s | %s | %s | %s | %s |\n",
			r.Scenario, title(r.Broker), r.Opened, r.Conns, r.OpenSeconds, human(r.MsgPerSec), fd, rss, per, resultCell(r, "all opened"))
	}
}

func (rep *report) hasTopology() bool {
	return slices.ContainsFunc(rep.plan, func(p planned) bool { return p.sc.name == topologyName })
}

// topologyRan lists the brokers with an amqp-topology-10k result, in
// --topology-brokers order.
func (rep *report) topologyRan() []string {
	var out []string
	for _, b := range rep.topologyBrokers {
		if slices.ContainsFunc(rep.results, func(r result) bool { return r.Scenario == topologyName && r.Broker == b }) {
			out = append(out, b)
		}
	}
	return out
}

// writeTopology is the table of the amqp-topology-10k runs: how long the
// queues and bindings took, the broker's memory, and routing through them.
func (rep *report) writeTopology(w io.Writer) {
	var runs []result
	for _, r := range rep.results {
		if r.Scenario == topologyName {
			runs = append(runs, r)
		}
	}
	if len(runs) == 0 {
		return
	}
	fmt.Fprintf(w, "\n## AMQP topology: queues with 10 topic bindings each\n\n")
	fmt.Fprintf(w, "Each run declares the queues (non-durable, not exclusive, not auto-delete) and binds each to `amq.topic` with %d keys that mix literal words, `*` and `#` (`site.<i%%100>.dev.<i>.#`, `site.*.dev.<i>.temp`, `#.dev.<i>.battery`, `telemetry.#.<i>`, ...), on %d connections in parallel, each waiting for every reply. ",
		topoKeysPerQueue, topoWorkers)
	fmt.Fprintf(w, "RSS per queue is the broker's RSS growth from before the first declare to %s after the last bind-ok, over the queues; the broker was started for this run alone. ", topoSettle)
	fmt.Fprintf(w, "Routing: one publisher with confirms (window %d) publishes to `amq.topic` with routing keys that each match exactly one of %d sampled queues (through one or two of its bindings), each consumed on its own channel; every delivery is checked to have reached the queue its key targets, once. At the end the queues are deleted.\n\n",
		rep.cfg.window, topoSample)
	fmt.Fprintf(w, "| broker | queues | bindings | declare + bind | queues/s | broker RSS before → after | KiB RSS / queue | routing msg/s | p50 / p99 µs | lost (confirmed) | dup | delete | result |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range runs {
		qps := "–"
		if r.DeclareSeconds > 0 {
			qps = human(float64(r.Queues) / r.DeclareSeconds)
		}
		rss, per := rssCells(r.RSSBeforeKiB, r.RSSTopoKiB, r.RSSPerQueueKiB)
		fmt.Fprintf(w, "| %s | %d | %d | %.1f s | %s | %s | %s | %s | %.0f / %.0f | %d (%d) | %d | %.1f s | %s |\n",
			title(r.Broker), r.Queues, r.Bindings, r.DeclareSeconds, qps, rss, per, human(r.MsgPerSec), r.P50us, r.P99us,
			r.Lost, r.LostConfirmed, r.Dup, r.DeleteSeconds, resultCell(r, "ok"))
	}
}

// rssCells are the "broker RSS before → after" and "KiB RSS per ..." cells
// of a row: dashes when the broker's RSS after was not read.
func rssCells(beforeKiB, afterKiB int64, perKiB float64) (rss, per string) {
	if afterKiB <= 0 {
		return "–", "–"
	}
	return fmt.Sprintf("%.1f → %.1f MiB", float64(beforeKiB)/1024, float64(afterKiB)/1024), fmt.Sprintf("%.2f", perKiB)
}

// resultCell is the result cell of a row: ok, or the error, with no "|"
// to break the table.
func resultCell(r result, ok string) string {
	if !r.OK {
		return "**FAIL**: " + strings.ReplaceAll(r.Error, "|", "/")
	}
	return ok
}

// titles joins broker titles: "ferrymq and Mosquitto".
func titles(names []string) string {
	var ts []string
	for _, n := range names {
		ts = append(ts, title(n))
	}
	if len(ts) < 2 {
		return strings.Join(ts, "")
	}
	return strings.Join(ts[:len(ts)-1], ", ") + " and " + ts[len(ts)-1]
}

func dedupe(xs []string) []string {
	seen := map[string]int{}
	var out []string
	for _, x := range xs {
		if seen[x] == 0 {
			out = append(out, x)
		}
		seen[x]++
	}
	for i, x := range out {
		if n := seen[x]; n > 1 {
			out[i] = fmt.Sprintf("%s (×%d)", x, n)
		}
	}
	return out
}

// machine describes the host: CPU model and count, memory, kernel.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				f := strings.Fields(rest)
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
				}
			}
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%d × %s%s%s", runtime.NumCPU(), model, mem, kernel)
}

// otherCPU is the median CPU use of the rest of the machine over all runs.
func (rep *report) otherCPU() float64 {
	var xs []float64
	for _, r := range rep.results {
		xs = append(xs, r.OtherCPUPct)
	}
	return median(xs)
}
