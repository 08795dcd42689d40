package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// runChild runs one scenario against one broker in a child ferrybench, so
// that no run inherits another's goroutines, connections or garbage.
func (o *orchestration) runChild(ctx context.Context, self string, cfg *config, p planned, b *brokerProc, stderr io.Writer) result {
	args := []string{
		"--scenario", p.sc.name, "--size", strconv.Itoa(p.size), "--json",
		"--broker-name", b.name, "--pid", strconv.Itoa(b.pid),
		"--amqp-url", b.amqpURL, "--mqtt-url", b.mqttURL, "--http-url", b.httpURL,
		"--mqtt-version", strconv.Itoa(cfg.mqttVersion),
		"--duration", cfg.duration.String(), "--messages", strconv.FormatInt(cfg.messages, 10),
		"--window", strconv.Itoa(cfg.window), "--prefetch", strconv.Itoa(cfg.prefetch),
		"--ack-every", strconv.Itoa(cfg.ackEvery), "--backlog", strconv.FormatInt(cfg.backlog, 10),
		"--conns", strconv.Itoa(p.connsOr(cfg.conns)), "--queues", strconv.Itoa(cfg.queues),
		"--drain-idle", cfg.drainIdle.String(), "--drain-subscriber", cfg.drainSub, "--edge-bin", o.ferrymqBin,
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
