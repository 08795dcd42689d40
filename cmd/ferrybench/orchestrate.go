package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// orchestration is --orchestrate: the driver of `make bench`.
type orchestration struct {
	enabled    bool
	ferrymqBin string
	benchDir   string
	out        string
	brokers    string
	reps       int
	budget     time.Duration
	keepTemp   bool

	connsLarge        int
	connsLargeBrokers string
	topologyBrokers   string
}

func (o *orchestration) flags(fs *flag.FlagSet) {
	fs.BoolVar(&o.enabled, "orchestrate", false, "start ferrymq, RabbitMQ and Mosquitto on free ports, run the scenarios against each, interleaved, and write --out")
	fs.StringVar(&o.ferrymqBin, "ferrymq-bin", "bin/ferrymq", "with --orchestrate: the ferrymq `binary`")
	fs.StringVar(&o.benchDir, "bench-dir", "bench", "with --orchestrate: `directory` of rabbitmq.conf and mosquitto.conf templates")
	fs.StringVar(&o.out, "out", "bench/results.md", "with --orchestrate: the Markdown `file` to write")
	fs.StringVar(&o.brokers, "brokers", "ferrymq,rabbitmq,mosquitto", "with --orchestrate: brokers to start, when installed")
	fs.IntVar(&o.reps, "reps", 3, "with --orchestrate: repetitions of every run (the tables show medians); fewer when --budget runs out")
	fs.DurationVar(&o.budget, "budget", 13*time.Minute, "with --orchestrate: start no repetition that would end after this much time (not counting the --conns-large run)")
	fs.BoolVar(&o.keepTemp, "keep-temp", false, "with --orchestrate: keep the brokers' temporary directory (data, configs, logs)")
	fs.IntVar(&o.connsLarge, "conns-large", 0, "with --orchestrate: also run idle-mqtt-conns once with this many `connections` (0: not), first, against each of --conns-large-brokers started afresh for it")
	fs.StringVar(&o.connsLargeBrokers, "conns-large-brokers", "ferrymq,mosquitto", "with --orchestrate: the `brokers` of the --conns-large run (RabbitMQ, at about 180 KiB per idle connection, would need some 17 GiB for 100,000)")
	fs.StringVar(&o.topologyBrokers, "topology-brokers", "ferrymq,rabbitmq", "with --orchestrate: the AMQP `brokers` amqp-topology-10k runs against, once each, each started afresh for it (RabbitMQ takes a minute or two to declare, bind and delete 10,000 queues)")
}

// startBroker starts one of the brokers --brokers names, with its data,
// configs and logs in dir, for up to conns connections (0: --conns, which
// the brokers' defaults allow).
func (o *orchestration) startBroker(ctx context.Context, name, dir string, conns int) (*brokerProc, error) {
	switch name {
	case "ferrymq":
		return startFerrymq(ctx, o.ferrymqBin, dir)
	case "rabbitmq":
		return startRabbitMQ(ctx, o.benchDir, dir, conns+fdMargin)
	case "mosquitto":
		return startMosquitto(ctx, o.benchDir, dir)
	}
	return nil, fmt.Errorf("unknown broker %q in --brokers", name)
}

// brokerNames splits a comma-separated list of brokers.
func brokerNames(list string) []string {
	var names []string
	for _, n := range strings.Split(list, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	return names
}

// largeName is the label of the --conns-large cell: idle-mqtt-conns-100k.
func largeName(n int) string {
	if n%1000 == 0 {
		return fmt.Sprintf("idle-mqtt-conns-%dk", n/1000)
	}
	return fmt.Sprintf("idle-mqtt-conns-%d", n)
}

// fdMargin is the file descriptors a run needs besides its connections.
const fdMargin = 1024

// run starts the brokers, runs the plan rep by rep (every scenario against
// every broker in turn, so that a slow minute of the machine hits them all),
// stops the brokers and writes the report.
func (o *orchestration) run(ctx context.Context, cfg *config, scenarioFlag string, stdout, stderr io.Writer) int {
	start := time.Now()
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "ferrybench: "+format+"\n", args...) }
	for _, name := range brokerNames(o.brokers) {
		if name != "ferrymq" && name != "rabbitmq" && name != "mosquitto" {
			logf("unknown broker %q in --brokers", name)
			return exitUsage
		}
	}
	// Raised here, before any broker starts: the brokers and the child
	// runs inherit the limit. Mosquitto and RabbitMQ keep the soft limit
	// they are given (RabbitMQ's scripts also cap the Erlang VM's ports at
	// ERL_MAX_PORTS, 65536, enough for --conns); Go programs raise their
	// soft limit to the hard one.
	need := uint64(max(cfg.conns, o.connsLarge) + fdMargin)
	lim, err := raiseNoFile(need)
	if err != nil {
		logf("cannot raise RLIMIT_NOFILE: %v", err)
		lim.soft, _ = procNoFile(os.Getpid())
	} else {
		logf("RLIMIT_NOFILE: %d for ferrybench and the brokers it starts", lim.soft)
		if lim.soft < need && lim.hardErr != nil {
			logf("RLIMIT_NOFILE stays below the %d wanted: %v", need, lim.hardErr)
		}
		if uint64(cfg.conns)+fdMargin > lim.soft {
			logf("RLIMIT_NOFILE is %d: idle-mqtt-conns uses %d connections instead of %d", lim.soft, lim.soft-fdMargin, cfg.conns)
			cfg.conns = int(lim.soft - fdMargin)
		}
	}
	self, err := os.Executable()
	if err != nil {
		logf("%v", err)
		return exitFail
	}
	tmp, err := os.MkdirTemp("", "ferrybench-")
	if err != nil {
		logf("%v", err)
		return exitFail
	}
	keep := o.keepTemp
	defer func() {
		if keep {
			logf("broker data, configs and logs kept in %s", tmp)
			return
		}
		os.RemoveAll(tmp)
	}()

	var brokers []*brokerProc
	var notes []string
	defer func() {
		for _, b := range brokers {
			logf("stopping %s", b.name)
			b.stop(30 * time.Second)
		}
	}()

	// The plan is made as if both protocols were available; each broker
	// gets the scenarios its listeners allow.
	planCfg := *cfg
	planCfg.amqpURL, planCfg.mqttURL = "amqp://x/", "tcp://x:1"
	plan, err := makePlan(scenarioFlag, &planCfg)
	if err != nil {
		logf("%v", err)
		return exitUsage
	}
	// idle-mqtt-conns goes first, once, while the brokers are fresh: after
	// the throughput runs a garbage-collected broker holds freed memory
	// that new connections reuse and that it returns to the OS at its own
	// pace, so RSS growth per connection would mean little.
	// amqp-topology-10k runs once too, against brokers started afresh for
	// it, for the same reason: its RSS growth per queue.
	var idle, topo []planned
	for i := 0; i < len(plan); i++ {
		switch plan[i].sc.name {
		case "idle-mqtt-conns":
			idle = append(idle, plan[i])
		case topologyName:
			topo = append(topo, plan[i])
		default:
			continue
		}
		plan = append(plan[:i], plan[i+1:]...)
		i--
	}

	var results []result
	// addFresh runs p against the broker name started for it alone and
	// adds the result; false when the broker is not installed. A broker
	// that did not start keeps the temporary directory, for its logs.
	addFresh := func(p planned, name, dir string) bool {
		res, ran := o.runFresh(ctx, self, cfg, p, name, dir, stderr, logf)
		if !ran {
			return false
		}
		if !res.OK && strings.HasPrefix(res.Error, "not started") {
			keep = true
		}
		results = append(results, res)
		return true
	}
	// The --conns-large cell runs before everything else, against brokers
	// started for it alone and stopped after it: a broker that closed
	// 10,000 connections would reuse their freed memory, and the other
	// runs do not share the machine with a broker holding gigabytes.
	var large *planned
	var largeNotRun string
	var largeTime time.Duration
	if o.connsLarge > 0 && len(idle) > 0 {
		t0 := time.Now()
		p := planned{sc: idle[0].sc, size: idle[0].size, conns: o.connsLarge}
		if lim.soft < uint64(o.connsLarge+fdMargin) {
			why := ""
			if lim.hardErr != nil {
				why = ": " + lim.hardErr.Error()
			}
			largeNotRun = fmt.Sprintf("%s not run: it needs %d file descriptors in the broker and in ferrybench, and RLIMIT_NOFILE is %d%s", p.name(), o.connsLarge+fdMargin, lim.soft, why)
			logf("%s", largeNotRun)
			notes = append(notes, largeNotRun)
			large = &p
		} else {
			for _, name := range brokerNames(o.connsLargeBrokers) {
				if ctx.Err() != nil || !slices.Contains(brokerNames(o.brokers), name) {
					continue
				}
				if addFresh(p, name, filepath.Join(tmp, "large-"+name)) {
					large = &p
				}
			}
		}
		largeTime = time.Since(t0)
	}

	// amqp-topology-10k: once per AMQP broker, each started for it and
	// stopped after it, before the brokers of the other runs start.
	var topoTime time.Duration
	if len(topo) > 0 {
		t0 := time.Now()
		for _, name := range brokerNames(o.topologyBrokers) {
			if ctx.Err() != nil || !slices.Contains(brokerNames(o.brokers), name) || name == "mosquitto" {
				continue
			}
			for _, p := range topo {
				addFresh(p, name, filepath.Join(tmp, "topology-"+name))
			}
		}
		topoTime = time.Since(t0)
		logf("%s took %s", topologyName, topoTime.Round(time.Second))
	}

	for _, name := range brokerNames(o.brokers) {
		t0 := time.Now()
		b, err := o.startBroker(ctx, name, tmp, 0)
		if err != nil {
			note := fmt.Sprintf("%s: not benchmarked: %v", name, err)
			logf("%s", note)
			notes = append(notes, note)
			if !errors.Is(err, errNotInstalled) {
				keep = true
			}
			if name == "ferrymq" {
				return exitFail
			}
			continue
		}
		logf("%s (%s) ready in %.1fs, pid %d: amqp %q mqtt %q", b.name, b.version, time.Since(t0).Seconds(), b.pid, b.amqpURL, b.mqttURL)
		brokers = append(brokers, b)
	}

	reps := 0
	var repTime time.Duration
	for rep := 1; rep <= o.reps && ctx.Err() == nil; rep++ {
		if rep > 1 && time.Since(start)-largeTime-topoTime+repTime > o.budget {
			notes = append(notes, fmt.Sprintf("stopped after %d repetitions: another (%.0fs) would pass the %s budget", reps, repTime.Seconds(), o.budget))
			break
		}
		t0 := time.Now()
		runPlan := plan
		if rep == 1 {
			runPlan = append(idle, plan...)
		}
		for _, p := range runPlan {
			for _, b := range brokers {
				if ctx.Err() != nil {
					break
				}
				if (p.sc.amqp && b.amqpURL == "") || (p.sc.mqtt && b.mqttURL == "") {
					continue
				}
				if !b.running() {
					logf("%s is no longer running; see %s", b.name, b.logPath)
					continue
				}
				if quiet, broker, other := settle(ctx, b.pid); !quiet {
					logf("starting anyway after %s: %s still at %.0f%% CPU (other processes %.0f%%)", settleMax, b.name, broker, other)
				} else if other >= 40 {
					logf("other processes use %.0f%% CPU; starting anyway", other)
				}
				logf("rep %d/%d: %s (%d B) on %s", rep, o.reps, p.sc.name, p.size, b.name)
				res := o.runChild(ctx, self, cfg, p, b, stderr)
				results = append(results, res)
				if res.Error != "" && strings.HasPrefix(res.Error, "ferrybench child") {
					fmt.Fprintln(stderr, summaryLine(res)) // the child could not say it
				}
			}
		}
		if ctx.Err() == nil {
			reps = rep
		}
		repTime = time.Since(t0)
	}
	if ctx.Err() != nil {
		logf("interrupted; writing what was measured")
		notes = append(notes, "interrupted before the end")
	}

	reportPlan := slices.Clone(idle)
	if large != nil {
		reportPlan = append(reportPlan, *large)
	}
	reportPlan = append(reportPlan, topo...)
	rep := report{
		started: start, elapsed: time.Since(start), reps: reps, cfg: cfg,
		brokers: brokers, plan: append(reportPlan, plan...), results: results, notes: notes,
		large: large, largeBrokers: brokerNames(o.connsLargeBrokers), largeNotRun: largeNotRun,
		topologyBrokers: brokerNames(o.topologyBrokers),
	}
	var buf bytes.Buffer
	rep.write(&buf)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		logf("%v", err)
		return exitFail
	}
	if err := os.WriteFile(o.out, buf.Bytes(), 0o644); err != nil {
		logf("%v", err)
		return exitFail
	}
	stdout.Write(buf.Bytes())
	logf("wrote %s in %s", o.out, time.Since(start).Round(time.Second))
	// Other brokers' failures (Mosquitto dropping PUBACKed messages past
	// its queue limit, say) are findings for the report; ferrymq's fail
	// the benchmark.
	code := exitOK
	for _, r := range results {
		if !r.OK {
			logf("FAIL %s (%d B) on %s: %s", r.Scenario, r.Size, r.Broker, r.Error)
			if r.Broker == "ferrymq" {
				code = exitFail
			}
		}
	}
	return code
}

// runChild runs one scenario against one broker in a child ferrybench, so
// that no run inherits another's goroutines, connections or garbage.
func (o *orchestration) runChild(ctx context.Context, self string, cfg *config, p planned, b *brokerProc, stderr io.Writer) result {
	args := []string{
		"--scenario", p.sc.name, "--size", strconv.Itoa(p.size), "--json",
		"--broker-name", b.name, "--pid", strconv.Itoa(b.pid),
		"--amqp-url", b.amqpURL, "--mqtt-url", b.mqttURL,
		"--mqtt-version", strconv.Itoa(cfg.mqttVersion),
		"--duration", cfg.duration.String(), "--messages", strconv.FormatInt(cfg.messages, 10),
		"--window", strconv.Itoa(cfg.window), "--prefetch", strconv.Itoa(cfg.prefetch),
		"--ack-every", strconv.Itoa(cfg.ackEvery), "--backlog", strconv.FormatInt(cfg.backlog, 10),
		"--conns", strconv.Itoa(p.connsOr(cfg.conns)), "--queues", strconv.Itoa(cfg.queues),
		"--drain-idle", cfg.drainIdle.String(),
		"--progress=" + strconv.FormatBool(cfg.progress != nil),
		"--plain-conns=" + strconv.FormatBool(cfg.plainConns),
	}
	// Opening idle connections takes up to a millisecond each.
	limit := cfg.duration + 3*time.Minute + time.Duration(p.connsOr(cfg.conns))*time.Millisecond
	if p.sc.name == topologyName {
		// RabbitMQ declares, binds and deletes some 100 queues a second
		// on a busy machine.
		limit += time.Duration(cfg.queues) * 30 * time.Millisecond
	}
	cctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(cctx, self, args...)
	cmd.Stderr = stderr
	var out bytes.Buffer
	cmd.Stdout = &out
	err := cmd.Run()
	res := result{Scenario: p.name(), Broker: b.name, Size: p.size}
	sc := bufio.NewScanner(&out)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if line := sc.Bytes(); len(line) > 0 && line[0] == '{' {
			if jerr := json.Unmarshal(line, &res); jerr == nil {
				res.Scenario = p.name()
				return res
			}
		}
	}
	res.OK = false
	res.Error = fmt.Sprintf("ferrybench child printed no result: %v", err)
	if cctx.Err() != nil {
		res.Error = fmt.Sprintf("ferrybench child killed after %s", limit)
	}
	return res
}

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
	}
	return target{}
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
		lowerBetter := p.sc.name == "idle-mqtt-conns" || strings.HasPrefix(p.sc.name, "latency-") || rw.memory
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

// runFresh runs p once - the --conns-large cell or amqp-topology-10k -
// against the broker name, started for it with its files in dir and
// stopped after it. It reports false when
// the broker is not installed: the main start notes that.
func (o *orchestration) runFresh(ctx context.Context, self string, cfg *config, p planned, name, dir string, stderr io.Writer, logf func(string, ...any)) (result, bool) {
	res := result{Scenario: p.name(), Broker: name, Size: p.size, Conns: p.conns}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.Error = err.Error()
		return res, true
	}
	t0 := time.Now()
	b, err := o.startBroker(ctx, name, dir, p.conns)
	if errors.Is(err, errNotInstalled) {
		return res, false
	}
	if err != nil {
		res.Error = fmt.Sprintf("not started: %v", err)
		logf("%s: %s", name, res.Error)
		return res, true
	}
	defer func() {
		logf("stopping %s (%s)", b.name, p.name())
		b.stop(30 * time.Second)
	}()
	logf("%s (%s) for %s ready in %.1fs, pid %d: amqp %q mqtt %q", b.name, b.version, p.name(), time.Since(t0).Seconds(), b.pid, b.amqpURL, b.mqttURL)
	if quiet, broker, other := settle(ctx, b.pid); !quiet {
		logf("starting anyway after %s: %s still at %.0f%% CPU (other processes %.0f%%)", settleMax, b.name, broker, other)
	}
	logf("%s on %s", p.name(), b.name)
	res = o.runChild(ctx, self, cfg, p, b, stderr)
	if res.Error != "" && strings.HasPrefix(res.Error, "ferrybench child") {
		fmt.Fprintln(stderr, summaryLine(res))
	}
	return res, true
}

// topologyName is the scenario that runs once per broker, on a fresh one.
const topologyName = "amqp-topology-10k"

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

// settleMax bounds how long settle waits for a busy broker; otherWait,
// how long it waits for other processes.
const (
	settleMax = 15 * time.Second
	otherWait = 3 * time.Second
)

// settle waits until the broker has calmed down from the previous run
// (closing 10,000 connections keeps RabbitMQ busy for a while; a store
// compacts), at most settleMax, and then, at most otherWait from the
// start, until the rest of the machine is fairly idle too: on a shared
// machine other work comes and goes, and interleaving spreads what remains
// over all brokers. It reports whether the broker calmed down, with the
// last CPU readings (percent of one core).
func settle(ctx context.Context, pid int) (quiet bool, broker, other float64) {
	start := time.Now()
	for ctx.Err() == nil {
		a, errA := readProc(pid)
		sys0, at, errS := systemBusy()
		time.Sleep(300 * time.Millisecond)
		b, errB := readProc(pid)
		total := busySince(sys0, at)
		if errA != nil || errB != nil || errS != nil || total < 0 {
			return true, 0, 0 // nothing to wait for that we can see
		}
		broker = cpuPercent(a, b)
		other = max(0, total-broker)
		if broker < 15 && (other < 40 || time.Since(start) > otherWait) {
			return true, broker, other
		}
		if time.Since(start) > settleMax {
			return false, broker, other
		}
	}
	return false, broker, other
}
