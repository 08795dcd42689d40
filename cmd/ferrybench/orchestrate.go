package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
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

// fdNeed is the RLIMIT_NOFILE a run of conns connections needs: fdMargin
// besides them, and the tenth that ferrymq keeps from connections (with no
// --max-connections its limit is its RLIMIT_NOFILE less a tenth).
func fdNeed(conns int) uint64 { return uint64(conns + conns/9 + fdMargin) }

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
	need := fdNeed(max(cfg.conns, o.connsLarge))
	lim, err := raiseNoFile(need)
	if err != nil {
		logf("cannot raise RLIMIT_NOFILE: %v", err)
		lim.soft, _ = procNoFile(os.Getpid())
	} else {
		logf("RLIMIT_NOFILE: %d for ferrybench and the brokers it starts", lim.soft)
		if lim.soft < need && lim.hardErr != nil {
			logf("RLIMIT_NOFILE stays below the %d wanted: %v", need, lim.hardErr)
		}
		if fdNeed(cfg.conns) > lim.soft {
			fit := int(max(lim.soft, fdMargin)-fdMargin) * 9 / 10
			logf("RLIMIT_NOFILE is %d: idle-mqtt-conns uses %d connections instead of %d", lim.soft, fit, cfg.conns)
			cfg.conns = fit
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
	planCfg.amqpURL, planCfg.mqttURL, planCfg.httpURL = "amqp://x/", "tcp://x:1", "http://x:1"
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
	plan, idle, topo := takeOnce(plan)

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
		if lim.soft < fdNeed(o.connsLarge) {
			why := ""
			if lim.hardErr != nil {
				why = ": " + lim.hardErr.Error()
			}
			largeNotRun = fmt.Sprintf("%s not run: it needs %d file descriptors in the broker and in ferrybench, and RLIMIT_NOFILE is %d%s", p.name(), fdNeed(o.connsLarge), lim.soft, why)
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
				if (p.sc.amqp && b.amqpURL == "") || (p.sc.mqtt && b.mqttURL == "") || (p.sc.http && b.httpURL == "") {
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

// takeOnce takes the scenarios that run once out of plan:
// idle-mqtt-conns and amqp-topology-10k.
func takeOnce(plan []planned) (rest, idle, topo []planned) {
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
	return plan, idle, topo
}

// topologyName is the scenario that runs once per broker, on a fresh one.
const topologyName = "amqp-topology-10k"
