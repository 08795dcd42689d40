//go:build realbrokers

package interop_test

// The real-broker harness: RabbitMQ and Mosquitto from their Debian
// packages, each started as a child process on free loopback ports with
// its own config, data and log directories under t.TempDir(), so several
// can run at once beside any system-wide instance. Each can be stopped and
// started again on the same ports and data, for the outage tests.
//
// RABBITMQ_SERVER and MOSQUITTO name the binaries to use instead of the
// Debian paths.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

const (
	// rabbitReadyTimeout bounds a RabbitMQ boot: the Erlang VM, Mnesia and
	// the plugins take several seconds even on a fast machine, and on a
	// loaded one over a minute (the management plugin's node took 25 s to
	// its first log line and 56 s to its last boot step at a load average
	// of 18 on 2 cores, and was not ready at 60 s).
	rabbitReadyTimeout = 3 * time.Minute
	// realStartTimeout bounds the start of Mosquitto and of RabbitMQ's
	// epmd: milliseconds on a quiet machine, but a process start (and
	// Mosquitto's read of its persistence file) on a loaded one.
	realStartTimeout = 60 * time.Second
	// realStopTimeout bounds a graceful stop after SIGTERM.
	realStopTimeout = 60 * time.Second
	// pollInterval is how often a condition with a deadline is checked.
	pollInterval = 50 * time.Millisecond
)

// findBinary returns the path of a broker binary: the environment variable
// env if set, else the first of paths that exists, else name on PATH. It
// fails the test, naming the package to install, when there is none: the
// realbrokers tag asks for these brokers, so their absence is an error,
// never a skip.
func findBinary(t *testing.T, env, name, pkg string, paths ...string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s not found (set %s, or apt-get install %s)", name, env, pkg)
	return ""
}

// child is one run of a broker process, in a process group of its own so
// that stopping it reaches every process it started.
type child struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd.Wait has returned
	waitErr error         // cmd.Wait's result; read after exited is closed
}

// startChild starts bin with its stdout and stderr appended to logPath.
// Writing to a file rather than a pipe means Wait never waits for a
// grandchild that inherited the descriptors.
func startChild(t *testing.T, logPath string, env []string, bin string, args ...string) *child {
	t.Helper()
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close() // the child has its own copy
	fmt.Fprintf(out, "==== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	c := &child{cmd: exec.Command(bin, args...), exited: make(chan struct{})}
	c.cmd.Env = env
	c.cmd.Stdout, c.cmd.Stderr = out, out
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	return c
}

func (c *child) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// signal sends sig to the child's whole process group, or to the child
// alone should the group be gone already.
func (c *child) signal(sig syscall.Signal) {
	if err := syscall.Kill(-c.cmd.Process.Pid, sig); err != nil {
		c.cmd.Process.Signal(sig)
	}
}

// stop sends SIGTERM to the group and waits up to d for the child to exit,
// then kills the group. It reports whether the exit was graceful.
func (c *child) stop(d time.Duration) bool {
	if !c.running() {
		return true
	}
	c.signal(syscall.SIGTERM)
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-c.exited:
		return true
	case <-timer.C:
		c.kill()
		return false
	}
}

// kill sends SIGKILL to the group, as a crash would, and waits for the
// child to go.
func (c *child) kill() {
	if c.running() {
		c.signal(syscall.SIGKILL)
	}
	<-c.exited
}

// waitUntil checks ready every pollInterval until it returns nil; it fails
// the test, with the last error and the log's tail, if c exits first or
// deadline passes.
func waitUntil(t *testing.T, what string, c *child, logPath string, deadline time.Duration, ready func() error) {
	t.Helper()
	timeout := time.NewTimer(deadline)
	defer timeout.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		err := ready()
		if err == nil {
			return
		}
		select {
		case <-c.exited:
			t.Fatalf("%s exited before it was ready (%v); last check: %v\n%s", what, c.waitErr, err, logTail(logPath))
		case <-timeout.C:
			t.Fatalf("%s not ready within %v: %v\n%s", what, deadline, err, logTail(logPath))
		case <-tick.C:
		}
	}
}

// logTail returns the last 8 KiB of a log file, for failure messages.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	return fmt.Sprintf("---- tail of %s\n%s", path, b)
}

// dialTCP reports whether addr accepts a TCP connection.
func dialTCP(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err
}

// brokerEnv returns the environment without the variables that configure
// the brokers under test, plus extra.
func brokerEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "RABBITMQ_") || strings.HasPrefix(k, "ERL_") || k == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// ---- RabbitMQ ----

// RabbitMQ is a RabbitMQ node run by the test, with the rabbitmq_mqtt
// plugin and nothing else enabled. Its Erlang port mapper (epmd) is its
// own, on a free port, so no other node on the machine is affected.
type RabbitMQ struct {
	// URL is the AMQP URL with the guest user, which RabbitMQ allows from
	// loopback.
	URL string
	// AMQPAddr and MQTTAddr are the listeners' host:port, kept across
	// restarts.
	AMQPAddr, MQTTAddr string
	// Node is the Erlang node name, rabbit-<random>@localhost.
	Node string
	// HTTPAddr is the management plugin's host:port
	// (StartRabbitMQManagement); "" without it.
	HTTPAddr string

	t       *testing.T
	bin     string
	dir     string // config, data and logs
	logPath string // the node's stdout and stderr
	env     []string
	epmd    *child
	proc    *child // the current run; nil while stopped
}

// StartRabbitMQ starts a RabbitMQ node on free ports and returns once it
// accepts AMQP connections and its MQTT listener is up. The node and its
// epmd are killed when the test ends; the logs are shown if it failed.
func StartRabbitMQ(t *testing.T) *RabbitMQ {
	t.Helper()
	return startRabbitMQ(t, false)
}

// StartRabbitMQManagement is StartRabbitMQ with the rabbitmq_management
// plugin too, its HTTP API on a free port (HTTPAddr), guest/guest.
func StartRabbitMQManagement(t *testing.T) *RabbitMQ {
	t.Helper()
	return startRabbitMQ(t, true)
}

func startRabbitMQ(t *testing.T, management bool) *RabbitMQ {
	t.Helper()
	bin := findBinary(t, "RABBITMQ_SERVER", "rabbitmq-server", "rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server")
	if os.Getenv("RABBITMQ_SERVER") == "" && bin == "/usr/sbin/rabbitmq-server" {
		// Debian's wrapper runs the node as the rabbitmq user with the
		// system's directories; the script it wraps takes our environment.
		bin = "/usr/lib/rabbitmq/bin/rabbitmq-server"
	}
	dir := t.TempDir()
	r := &RabbitMQ{
		t: t, bin: bin, dir: dir, logPath: filepath.Join(dir, "stdout.log"),
		AMQPAddr: freePort(t), MQTTAddr: freePort(t), Node: "rabbit-" + randomHex(t) + "@localhost",
	}
	r.URL = "amqp://guest:guest@" + r.AMQPAddr + "/"
	epmdPort, distPort := port(freePort(t)), port(freePort(t))
	for _, d := range []string{"home", "mnesia", "log"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	plugins := "[rabbitmq_mqtt].\n"
	var extraConf []string
	if management {
		r.HTTPAddr = freePort(t)
		plugins = "[rabbitmq_mqtt,rabbitmq_management].\n"
		extraConf = []string{"management.tcp.ip = 127.0.0.1", "management.tcp.port = " + port(r.HTTPAddr)}
	}
	conf := strings.Join(append([]string{
		"listeners.tcp.1 = " + r.AMQPAddr,
		"mqtt.listeners.tcp.1 = " + r.MQTTAddr,
		"log.console = false",
		"log.file.level = info",
		// The outage test buffers 10,000 messages; the defaults are fine
		// for that, but say so rather than depend on the machine's RAM.
		"vm_memory_high_watermark.absolute = 1GB",
		"disk_free_limit.absolute = 50MB",
	}, extraConf...), "\n") + "\n"
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	r.env = brokerEnv(
		"HOME="+filepath.Join(dir, "home"), // the Erlang cookie goes there
		"RABBITMQ_NODENAME="+r.Node,
		"ERL_EPMD_PORT="+epmdPort,
		"RABBITMQ_DIST_PORT="+distPort,
		"RABBITMQ_MNESIA_BASE="+filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(dir, "log"),
		"RABBITMQ_CONFIG_FILE="+write("rabbitmq.conf", conf),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+write("enabled_plugins", plugins),
		"RABBITMQ_CONF_ENV_FILE="+write("rabbitmq-env.conf", ""),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(dir, "advanced.config"), // absent
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
	)
	// An epmd of our own, in the foreground, started before the node so
	// that the node does not start a daemon one that would outlive it.
	epmdBin := findBinary(t, "EPMD", "epmd", "erlang-base", "/usr/bin/epmd")
	r.epmd = startChild(t, filepath.Join(dir, "epmd.log"), r.env, epmdBin, "-port", epmdPort, "-address", "127.0.0.1")
	t.Cleanup(func() {
		if r.proc != nil {
			r.proc.kill()
		}
		r.epmd.kill()
		if t.Failed() {
			t.Logf("RabbitMQ %s:\n%s\n%s", r.Node, logTail(r.logPath), logTail(filepath.Join(dir, "log", r.Node+".log")))
		}
	})
	waitUntil(t, "epmd", r.epmd, filepath.Join(dir, "epmd.log"), realStartTimeout, func() error {
		return dialTCP("127.0.0.1:" + epmdPort)
	})
	r.Start()
	return r
}

// port returns the port of a host:port.
func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// Start starts the node again after Stop, on the same ports and data.
func (r *RabbitMQ) Start() {
	t := r.t
	t.Helper()
	if r.proc != nil {
		t.Fatal("RabbitMQ.Start: already running")
	}
	start := time.Now()
	r.proc = startChild(t, r.logPath, r.env, r.bin)
	waitUntil(t, "RabbitMQ "+r.Node, r.proc, r.logPath, rabbitReadyTimeout, func() error {
		if err := dialTCP(r.MQTTAddr); err != nil {
			return err
		}
		if r.HTTPAddr != "" {
			if err := dialTCP(r.HTTPAddr); err != nil {
				return err
			}
		}
		c, err := amqp.DialConfig(r.URL, amqp.Config{Dial: amqp.DefaultDial(time.Second)})
		if err != nil {
			return err
		}
		return c.Close()
	})
	t.Logf("RabbitMQ %s ready on %s (MQTT %s) in %v", r.Node, r.AMQPAddr, r.MQTTAddr, time.Since(start).Round(time.Millisecond))
}

// Stop shuts the node down gracefully (SIGTERM); its data stays for Start.
func (r *RabbitMQ) Stop() {
	t := r.t
	t.Helper()
	if r.proc == nil {
		return
	}
	if !r.proc.stop(realStopTimeout) {
		t.Logf("RabbitMQ %s did not stop within %v of SIGTERM; killed", r.Node, realStopTimeout)
	}
	r.proc = nil
}

// Dial opens an AMQP connection and channel to the node, closed when the
// test ends.
func (r *RabbitMQ) Dial(t *testing.T) (*amqp.Connection, *amqp.Channel) {
	t.Helper()
	conn, err := amqp.Dial(r.URL)
	if err != nil {
		t.Fatalf("dial RabbitMQ %s: %v", r.URL, err)
	}
	t.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return conn, ch
}

// Queue declares a durable queue bound to amq.topic with each key and
// returns a channel to consume it on.
func (r *RabbitMQ) Queue(t *testing.T, name string, keys ...string) *amqp.Channel {
	t.Helper()
	_, ch := r.Dial(t)
	if _, err := ch.QueueDeclare(name, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := ch.QueueBind(name, k, "amq.topic", false, nil); err != nil {
			t.Fatal(err)
		}
	}
	return ch
}

// WaitConsumers waits until queue exists and has n consumers: the sign
// that a bridge's inbound link is consuming it.
func (r *RabbitMQ) WaitConsumers(t *testing.T, queue string, n int) {
	t.Helper()
	conn, _ := r.Dial(t)
	waitUntil(t, "consumer on RabbitMQ queue "+queue, r.proc, r.logPath, 30*time.Second, func() error {
		ch, err := conn.Channel() // a failed passive declare closes it
		if err != nil {
			return err
		}
		defer ch.Close()
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			return err
		}
		if q.Consumers != n {
			return fmt.Errorf("%d consumers", q.Consumers)
		}
		return nil
	})
}

// ---- Mosquitto ----

// Mosquitto is a Mosquitto broker run by the test: anonymous access on one
// loopback listener, persistence on, and a queue limit high enough that the
// broker itself never drops the outage test's messages.
type Mosquitto struct {
	// Addr is the listener's host:port, kept across restarts.
	Addr string

	t       *testing.T
	bin     string
	conf    string
	logPath string
	proc    *child // the current run; nil while stopped
}

// StartMosquitto starts Mosquitto on a free port and returns once it
// accepts connections; extra are more lines of its configuration (a
// bridge's connection). It is killed when the test ends; its log is shown
// if the test failed.
func StartMosquitto(t *testing.T, extra ...string) *Mosquitto {
	t.Helper()
	dir := t.TempDir()
	m := &Mosquitto{
		Addr: freePort(t), t: t, logPath: filepath.Join(dir, "mosquitto.log"),
		bin: findBinary(t, "MOSQUITTO", "mosquitto", "mosquitto", "/usr/sbin/mosquitto"),
	}
	lines := []string{
		"listener " + port(m.Addr) + " 127.0.0.1",
		"allow_anonymous true",
		"persistence true",
		"persistence_location " + dir + "/",
		"max_queued_messages 100000",
		"log_dest stderr",
		"log_timestamp_format %Y-%m-%dT%H:%M:%S",
	}
	if os.Getuid() == 0 {
		// As root Mosquitto would switch to the mosquitto user, which
		// cannot write our temporary directory.
		lines = append(lines, "user root")
	}
	lines = append(lines, extra...)
	m.conf = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m.proc != nil {
			m.proc.kill()
		}
		if t.Failed() {
			t.Logf("Mosquitto %s:\n%s", m.Addr, logTail(m.logPath))
		}
	})
	m.Start()
	return m
}

// Start starts Mosquitto again after Stop, on the same port and data.
func (m *Mosquitto) Start() {
	t := m.t
	t.Helper()
	if m.proc != nil {
		t.Fatal("Mosquitto.Start: already running")
	}
	m.proc = startChild(t, m.logPath, os.Environ(), m.bin, "-c", m.conf)
	waitUntil(t, "Mosquitto", m.proc, m.logPath, realStartTimeout, func() error { return dialTCP(m.Addr) })
}

// Stop shuts Mosquitto down (SIGTERM), which writes its persistence file.
func (m *Mosquitto) Stop() {
	t := m.t
	t.Helper()
	if m.proc == nil {
		return
	}
	if !m.proc.stop(realStopTimeout) {
		t.Logf("Mosquitto did not stop within %v of SIGTERM; killed", realStopTimeout)
	}
	m.proc = nil
}
