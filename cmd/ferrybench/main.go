// Command ferrybench measures an AMQP 0-9-1 / MQTT broker: throughput,
// latency and memory, for the scenarios of ferrymq's issue 6, against any
// broker given by URL (ferrymq, RabbitMQ, Mosquitto, ...).
//
//	ferrybench --amqp-url amqp://guest:guest@127.0.0.1:5672/ --mqtt-url tcp://127.0.0.1:1883 \
//	    --scenario all --duration 5s --pid $(pidof ferrymq) --broker-name ferrymq --json
//
// Every run checks delivery: each body carries its publisher's id and a
// sequence number, and the receivers count lost and duplicated messages. A
// run fails - a FAIL line on stderr, "ok": false in its JSON line, exit
// status 1 - when a message the broker acknowledged (publisher confirm,
// PUBACK, or an AMQP channel that closed cleanly after the publishes) never
// arrived. Losses of QoS 0 deliveries are reported, not failed.
//
// While a run goes, a progress line on stderr shows the rates so far. Each
// run prints one JSON line on stdout with --json; at the end a Markdown
// table sums them up.
//
// With --orchestrate it is the driver of `make bench`: it starts ferrymq,
// RabbitMQ and Mosquitto on free ports, runs every scenario against each of
// them, interleaved, and writes bench/results.md. See orchestrate.go.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills
	}()
	code := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if os.Getenv("GOGC") == "" {
		// The client libraries allocate per message; with the default
		// GOGC the load client spends a third of its CPU in the GC and
		// returning memory, on cores it shares with the broker. Its live
		// heap is small, so a higher target costs little memory.
		debug.SetGCPercent(800)
	}
	fs := flag.NewFlagSet("ferrybench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := &config{}
	var (
		scenarioFlag string
		jsonOut      bool
		progress     bool
		list         bool
		cpuProfile   string
		orch         orchestration
	)
	fs.StringVar(&cfg.amqpURL, "amqp-url", "amqp://guest:guest@127.0.0.1:5672/", "AMQP broker `URL`; empty skips the AMQP scenarios")
	fs.StringVar(&cfg.mqttURL, "mqtt-url", "tcp://127.0.0.1:1883", "MQTT broker `URL` (tcp://[user:pass@]host:port); empty skips the MQTT scenarios")
	fs.IntVar(&cfg.mqttVersion, "mqtt-version", 3, "MQTT protocol: 3 (3.1.1, paho.mqtt.golang) or 5 (paho.golang)")
	var tf tlsFlags
	fs.StringVar(&cfg.httpURL, "http-url", "", "management API `URL` (http://guest:guest@127.0.0.1:15672) for "+mgmtQueuesName+"; empty skips it")
	fs.StringVar(&cfg.amqpsURL, "amqps-url", "", "AMQP over TLS `URL` (amqps://) for the -tls scenarios; empty skips them")
	fs.StringVar(&cfg.mqttsURL, "mqtts-url", "", "MQTT over TLS `URL` (ssl://[user:pass@]host:port) for the -tls scenarios; empty skips them")
	fs.StringVar(&tf.ca, "tls-ca", "", "PEM `file` of the CA the TLS scenarios trust (default: the system's)")
	fs.StringVar(&tf.cert, "tls-cert", "", "PEM client certificate `file` the TLS scenarios present")
	fs.StringVar(&tf.key, "tls-key", "", "PEM key `file` of --tls-cert")
	fs.BoolVar(&tf.insecure, "tls-insecure", false, "do not verify the broker's certificate")
	fs.StringVar(&scenarioFlag, "scenario", "all", "scenario `names`, comma-separated, or all (see --list)")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "how long each run publishes")
	fs.Int64Var(&cfg.messages, "messages", 0, "publish this many messages per run instead of running for --duration")
	fs.IntVar(&cfg.size, "size", 0, "message body `bytes`, at least 10 (default: the scenario's own, 16 or 1024; all runs amqp-1to1 at both)")
	fs.IntVar(&cfg.pid, "pid", 0, "broker process `id`: sample its RSS and CPU from /proc during each run")
	fs.BoolVar(&jsonOut, "json", false, "print one JSON line per run on stdout")
	fs.StringVar(&cfg.broker, "broker-name", "broker", "broker `label` for the output")
	fs.IntVar(&cfg.window, "window", 1000, "publisher confirms / QoS 1 PUBACKs in flight per publisher (mqtt-fanin-100 splits it among its publishers)")
	fs.IntVar(&cfg.prefetch, "prefetch", 1000, "AMQP consumer prefetch (basic.qos)")
	fs.IntVar(&cfg.ackEvery, "ack-every", 100, "AMQP consumers ack with multiple=true every `n` deliveries")
	fs.Int64Var(&cfg.backlog, "backlog", 10000, "publishers pause while this many `messages` are published but not yet received")
	fs.IntVar(&cfg.conns, "conns", 10000, "connections for idle-mqtt-conns")
	fs.IntVar(&cfg.queues, "queues", 10000, "queues for amqp-topology-10k, 10 bindings each")
	fs.DurationVar(&cfg.drainIdle, "drain-idle", 3*time.Second, "after publishing, stop waiting for missing messages after this long without one")
	fs.StringVar(&cfg.drainSub, "drain-subscriber", "during", "bridge-drain-*: `when` the upstream's subscriber reads: during the drain (it checks loss and order as messages arrive), or none (the upstream only takes the publishes, as when its consumers are away; an AMQP upstream's queue is read and checked after the drain, an MQTT upstream is not checked)")
	fs.StringVar(&cfg.edgeBin, "edge-bin", "bin/ferrymq", "bridge-drain-*: the ferrymq `binary` started as the edge whose bridge drains into the broker under test; chaos-soak: the one it starts, kills and restarts")
	fs.DurationVar(&cfg.killEvery, "kill-every", 10*time.Second, "chaos-soak: mean `time` between SIGKILLs of the broker (each wait is 0.5-1.5 times it)")
	fs.IntVar(&cfg.minKills, "min-kills", 0, "chaos-soak: at least this many `kills` within --duration: waits are shortened when the random ones would leave fewer")
	fs.StringVar(&cfg.brokerArgs, "broker-args", "", "chaos-soak: extra `flags` for the ferrymq it starts, space-separated (e.g. \"--memory-limit 512MiB\")")
	fs.IntVar(&cfg.maxRSSMiB, "max-rss", 0, "chaos-soak: fail if the broker's peak RSS passes this many `MiB` (0: report only)")
	fs.IntVar(&cfg.chaosRate, "chaos-rate", 300, "chaos-soak: messages per second per publisher (4 publishers)")
	fs.BoolVar(&cfg.plainConns, "plain-conns", false, "write each client write straight to its socket, without coalescing (the latency scenarios always do)")
	fs.BoolVar(&progress, "progress", true, "print a progress line on stderr every second")
	fs.BoolVar(&list, "list", false, "list the scenarios and exit")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write this process's CPU profile to `file` (to see whether the client is the limit)")
	orch.flags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ferrybench: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if list {
		for _, s := range scenarios {
			fmt.Fprintf(stdout, "%-24s %s\n", s.name, s.what)
		}
		return exitOK
	}
	if progress {
		cfg.progress = stderr
		if f, ok := stderr.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				cfg.progressTTY = true
			}
		}
	}
	tc, err := tf.clientConfig()
	if err != nil {
		fmt.Fprintf(stderr, "ferrybench: %v\n", err)
		return exitUsage
	}
	cfg.tlsConfig = tc
	if err := cfg.check(); err != nil {
		fmt.Fprintf(stderr, "ferrybench: %v\n", err)
		return exitUsage
	}
	if orch.enabled {
		return orch.run(ctx, cfg, scenarioFlag, stdout, stderr)
	}

	plan, err := makePlan(scenarioFlag, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "ferrybench: %v\n", err)
		return exitUsage
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "ferrybench: %v\n", err)
			return exitUsage
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "ferrybench: %v\n", err)
			return exitUsage
		}
		defer pprof.StopCPUProfile()
	}
	var results []result
	code := exitOK
	for _, p := range plan {
		if ctx.Err() != nil {
			break
		}
		res := runScenario(ctx, cfg, p.sc, p.size)
		results = append(results, res)
		if jsonOut {
			line, _ := json.Marshal(res)
			fmt.Fprintf(stdout, "%s\n", line)
		}
		fmt.Fprintln(stderr, summaryLine(res))
		if !res.OK {
			code = exitFail
		}
	}
	fmt.Fprintln(stdout)
	writeRunTable(stdout, results)
	writeTLSRatios(stdout, results)
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "ferrybench: interrupted")
		return exitFail
	}
	return code
}

func (cfg *config) check() error {
	if cfg.size != 0 && cfg.size < headerSize {
		return fmt.Errorf("--size %d: at least %d bytes, to carry the sequence number and send time", cfg.size, headerSize)
	}
	if cfg.mqttVersion != 3 && cfg.mqttVersion != 5 {
		return fmt.Errorf("--mqtt-version %d: 3 or 5", cfg.mqttVersion)
	}
	if cfg.drainSub != "during" && cfg.drainSub != "none" {
		return fmt.Errorf("--drain-subscriber %q: during or none", cfg.drainSub)
	}
	if cfg.duration <= 0 && cfg.messages <= 0 {
		return errors.New("--duration or --messages must be positive")
	}
	if cfg.window < 1 || cfg.prefetch < 1 || cfg.ackEvery < 1 || cfg.backlog < 1 || cfg.conns < 1 || cfg.queues < 1 {
		return errors.New("--window, --prefetch, --ack-every, --backlog, --conns and --queues must be at least 1")
	}
	if cfg.ackEvery > cfg.prefetch {
		return errors.New("--ack-every must not exceed --prefetch, or consumers stall")
	}
	for _, u := range []string{cfg.mqttURL, cfg.mqttsURL} {
		if u != "" {
			if _, err := parseMQTTURL(u); err != nil {
				return err
			}
		}
	}
	return nil
}

// planned is one run to make: a scenario at a body size, and for
// idle-mqtt-conns possibly another number of connections than --conns.
type planned struct {
	sc    *scenario
	size  int
	conns int // 0: --conns
}

// name is the run's label in results: the scenario's name, or for
// --conns-large idle-mqtt-conns-100k.
func (p planned) name() string {
	if p.conns > 0 {
		return largeName(p.conns)
	}
	return p.sc.name
}

func (p planned) connsOr(def int) int {
	if p.conns > 0 {
		return p.conns
	}
	return def
}

// makePlan expands --scenario into runs, skipping the scenarios whose
// broker URL is empty. all runs amqp-1to1 at 16 B and 1 KiB unless --size
// is given.
func makePlan(names string, cfg *config) ([]planned, error) {
	var plan []planned
	add := func(sc *scenario, all bool) {
		if sc.tls {
			if (sc.amqp && cfg.amqpsURL == "") || (sc.mqtt && cfg.mqttsURL == "") || (cfg.amqpsURL == "" && cfg.mqttsURL == "") {
				return
			}
		} else if (sc.amqp && cfg.amqpURL == "") || (sc.mqtt && cfg.mqttURL == "") || (sc.http && cfg.httpURL == "") {
			return
		}
		size := sc.size
		if cfg.size != 0 {
			size = cfg.size
		}
		plan = append(plan, planned{sc: sc, size: size})
		if all && sc.name == "amqp-1to1" && cfg.size == 0 {
			plan = append(plan, planned{sc: sc, size: 1024})
		}
	}
	for _, name := range strings.Split(names, ",") {
		name = strings.TrimSpace(name)
		if name == "all" {
			for _, sc := range scenarios {
				if sc.explicit {
					continue
				}
				add(sc, true)
			}
			continue
		}
		sc := findScenario(name)
		if sc == nil {
			return nil, fmt.Errorf("unknown scenario %q (see --list)", name)
		}
		add(sc, false)
	}
	if len(plan) == 0 {
		return nil, errors.New("no scenario to run: every one selected needs a broker URL that is empty")
	}
	return plan, nil
}

// summaryLine is the one-line report of a run on stderr; a failed run
// starts with FAIL.
func summaryLine(res result) string {
	var b strings.Builder
	if res.OK {
		b.WriteString("ferrybench: ok   ")
	} else {
		b.WriteString("ferrybench: FAIL ")
	}
	fmt.Fprintf(&b, "%s [%s] size=%d: ", res.Scenario, res.Broker, res.Size)
	if strings.HasPrefix(res.Scenario, "idle-mqtt-conns") {
		fmt.Fprintf(&b, "%d of %d conns opened in %.1fs (%s conn/s), %.2f KiB RSS per connection", res.Opened, res.Conns, res.OpenSeconds, human(res.MsgPerSec), res.RSSPerConnKiB)
	} else {
		if res.Queues > 0 {
			fmt.Fprintf(&b, "%d queues, %d bindings declared in %.1fs (deleted in %.1fs), ", res.Queues, res.Bindings, res.DeclareSeconds, res.DeleteSeconds)
			if res.RSSTopoKiB > 0 {
				fmt.Fprintf(&b, "broker rss %.1f -> %.1f MiB, %.2f KiB per queue, ", float64(res.RSSBeforeKiB)/1024, float64(res.RSSTopoKiB)/1024, res.RSSPerQueueKiB)
			}
			b.WriteString("routing: ")
		}
		fmt.Fprintf(&b, "%s msg/s, p50 %.0f µs, p99 %.0f µs, published %d, received %d, lost %d (confirmed %d), dup %d",
			human(res.MsgPerSec), res.P50us, res.P99us, res.Published, res.Received, res.Lost, res.LostConfirmed, res.Dup)
	}
	if res.RSSKiB > 0 {
		fmt.Fprintf(&b, ", broker rss %d MiB cpu %.0f%%", res.RSSKiB/1024, res.CPUPct)
	}
	if res.MemLimitMiB > 0 {
		fmt.Fprintf(&b, ", memory limit %d MiB, connection.blocked with %.0f MiB queued", res.MemLimitMiB, res.BlockedAtMiB)
	}
	fmt.Fprintf(&b, ", client cpu %.0f%%", res.ClientCPUPct)
	if res.Warning != "" {
		fmt.Fprintf(&b, "\n  warning: %s", res.Warning)
	}
	if !res.OK {
		fmt.Fprintf(&b, "\n  FAILED: %s", res.Error)
	}
	return b.String()
}

// writeRunTable prints the runs of one invocation as a Markdown table.
func writeRunTable(w io.Writer, results []result) {
	fmt.Fprintln(w, "| scenario | broker | size | msg/s | p50 µs | p99 µs | published | lost (confirmed) | dup | broker RSS peak | broker CPU | client CPU | ok |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range results {
		rate := human(r.MsgPerSec)
		if strings.HasPrefix(r.Scenario, "idle-mqtt-conns") {
			rate = fmt.Sprintf("%d of %d conns, %.2f KiB/conn", r.Opened, r.Conns, r.RSSPerConnKiB)
		}
		if r.Queues > 0 {
			rate = fmt.Sprintf("%s (%d queues declared+bound in %.1fs, %.2f KiB/queue)", rate, r.Queues, r.DeclareSeconds, r.RSSPerQueueKiB)
		}
		rss := "–"
		if r.RSSKiB > 0 {
			rss = fmt.Sprintf("%.1f MiB", float64(r.RSSKiB)/1024)
		}
		ok := "yes"
		if !r.OK {
			ok = "**FAIL**: " + r.Error
		}
		fmt.Fprintf(w, "| %s | %s | %d | %s | %.0f | %.0f | %d | %d (%d) | %d | %s | %.0f%% | %.0f%% | %s |\n",
			r.Scenario, r.Broker, r.Size, rate, r.P50us, r.P99us, r.Published, r.Lost, r.LostConfirmed, r.Dup,
			rss, r.CPUPct, r.ClientCPUPct, ok)
	}
}
