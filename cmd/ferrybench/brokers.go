package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// brokerProc is a broker the orchestrator started.
type brokerProc struct {
	name    string // ferrymq, rabbitmq, mosquitto: the label in results
	version string
	amqpURL string // "" when it has no AMQP listener
	mqttURL string
	httpURL string // the management API; "" when it has none
	pid     int    // the process whose RSS and CPU are sampled
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	stopFn  func()        // extra cleanup after the process ended (epmd)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func freePorts(n int) ([]int, error) {
	// Hold every listener until all are chosen, so the ports differ.
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// startProcess starts cmd in its own process group, killed if this
// process dies, with stdout and stderr going to logPath and, if lines is
// not nil, stderr also to lines, line by line (dropped when lines is full).
func startProcess(cmd *exec.Cmd, logPath string, lines chan<- string) (*brokerProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Stdout = logf
	cmd.Stderr = logf
	var pr *io.PipeReader
	if lines != nil {
		var pw *io.PipeWriter
		pr, pw = io.Pipe()
		cmd.Stderr = io.MultiWriter(logf, pw)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	if pr != nil {
		go func() {
			sc := bufio.NewScanner(pr)
			for sc.Scan() {
				select {
				case lines <- sc.Text():
				default:
				}
			}
		}()
	}
	b := &brokerProc{cmd: cmd, pid: cmd.Process.Pid, logPath: logPath, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logf.Close()
		if pr != nil {
			pr.Close()
		}
		close(b.exited)
	}()
	return b, nil
}

// stop ends the broker: SIGTERM, then SIGKILL to its process group after
// grace.
func (b *brokerProc) stop(grace time.Duration) {
	if b == nil || b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.exited:
	case <-time.After(grace):
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.exited
	}
	if b.stopFn != nil {
		b.stopFn()
	}
}

func (b *brokerProc) running() bool {
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}

// listenerReady matches ferrymq's `msg="listener ready" proto=amqp
// addr=127.0.0.1:40123` log line.
var listenerReady = regexp.MustCompile(`msg="listener ready" proto=(\S+) addr=(\S+)`)

func startFerrymq(ctx context.Context, bin, dir string, extra ...string) (*brokerProc, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("ferrymq binary: %w (run make build)", err)
	}
	data := filepath.Join(dir, "ferrymq-data")
	args := append([]string{"--amqp-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--mqtt-ws-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
		"--data-dir", data, "--log-level", "info"}, extra...)
	// The management listener is waited for unless extra turned it off
	// (the last --http-listen counts).
	wantHTTP := true
	for i, a := range args {
		if a == "--http-listen" && i+1 < len(args) {
			wantHTTP = args[i+1] != ""
		}
	}
	cmd := exec.Command(bin, args...)
	lines := make(chan string, 64)
	b, err := startProcess(cmd, filepath.Join(dir, "ferrymq.log"), lines)
	if err != nil {
		return nil, err
	}
	b.name = "ferrymq"
	b.version = ferrymqVersion()
	deadline := time.After(30 * time.Second)
	for b.amqpURL == "" || b.mqttURL == "" || (wantHTTP && b.httpURL == "") {
		select {
		case line := <-lines:
			if m := listenerReady.FindStringSubmatch(line); m != nil {
				switch m[1] {
				case "amqp":
					b.amqpURL = "amqp://guest:guest@" + m[2] + "/"
				case "mqtt":
					b.mqttURL = "tcp://" + m[2]
				case "http":
					b.httpURL = "http://guest:guest@" + m[2]
				}
			}
		case <-b.exited:
			return nil, fmt.Errorf("ferrymq exited during start; see %s", b.logPath)
		case <-deadline:
			b.stop(5 * time.Second)
			return nil, fmt.Errorf("ferrymq: no listener ready line within 30 s; see %s", b.logPath)
		case <-ctx.Done():
			b.stop(5 * time.Second)
			return nil, ctx.Err()
		}
	}
	return b, nil
}

// ferrymqVersion is the commit the working tree is at, from git when
// available.
func ferrymqVersion() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "dev"
	}
	return strings.TrimSpace(string(out))
}

// rabbitmqServer is the script that runs the node in the foreground as the
// current user (Debian puts it here; /usr/sbin/rabbitmq-server switches to
// the rabbitmq user).
func rabbitmqServer() string {
	for _, p := range []string{"/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/local/lib/rabbitmq/bin/rabbitmq-server"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// fillTemplate reads benchDir/name and replaces each {{KEY}}.
func fillTemplate(benchDir, name string, vars map[string]string) (string, error) {
	b, err := os.ReadFile(filepath.Join(benchDir, name))
	if err != nil {
		return "", err
	}
	s := string(b)
	for k, v := range vars {
		s = strings.ReplaceAll(s, "{{"+k+"}}", v)
	}
	if i := strings.Index(s, "{{"); i >= 0 {
		return "", fmt.Errorf("%s: unknown placeholder at %q", name, s[i:min(len(s), i+20)])
	}
	return s, nil
}

// startRabbitMQ runs a private RabbitMQ node with the MQTT plugin: its own
// node name, ports, epmd, config, data, logs and Erlang cookie (HOME), all
// under dir. Its scripts cap the Erlang VM at ERL_MAX_PORTS = 65536 ports
// (sockets and files); for more, maxPorts raises it, unless the
// environment sets it.
func startRabbitMQ(ctx context.Context, benchDir, dir string, maxPorts int) (*brokerProc, error) {
	server := rabbitmqServer()
	if server == "" {
		return nil, errNotInstalled
	}
	rdir := filepath.Join(dir, "rabbitmq")
	if err := os.MkdirAll(filepath.Join(rdir, "log"), 0o755); err != nil {
		return nil, err
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	amqpPort, mqttPort, distPort, epmdPort := ports[0], ports[1], ports[2], ports[3]
	conf, err := fillTemplate(benchDir, "rabbitmq.conf", map[string]string{
		"AMQP_PORT": strconv.Itoa(amqpPort), "MQTT_PORT": strconv.Itoa(mqttPort),
	})
	if err != nil {
		return nil, err
	}
	files := map[string]string{
		"rabbitmq.conf":     conf,
		"enabled_plugins":   "[rabbitmq_mqtt].\n",
		"rabbitmq-env.conf": "# empty: the environment comes from ferrybench\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(rdir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	node := fmt.Sprintf("ferrybench%d@localhost", os.Getpid())
	env := append(os.Environ(),
		"HOME="+rdir, // the Erlang cookie goes here
		"RABBITMQ_NODENAME="+node,
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(rdir, "rabbitmq-env.conf"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(rdir, "rabbitmq.conf"),
		"RABBITMQ_ADVANCED_CONFIG_FILE="+filepath.Join(rdir, "advanced.config"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(rdir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(rdir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(rdir, "log"),
		"RABBITMQ_PID_FILE="+filepath.Join(rdir, "rabbitmq.pid"),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(distPort),
		"ERL_EPMD_PORT="+strconv.Itoa(epmdPort),
	)
	if maxPorts > 65536 && os.Getenv("ERL_MAX_PORTS") == "" {
		env = append(env, "ERL_MAX_PORTS="+strconv.Itoa(maxPorts))
	}
	cmd := exec.Command(server)
	cmd.Dir = rdir
	cmd.Env = env
	b, err := startProcess(cmd, filepath.Join(rdir, "startup.log"), nil)
	if err != nil {
		return nil, err
	}
	b.name = "rabbitmq"
	b.stopFn = func() {
		// The node started its own epmd on a private port; end it.
		kill := exec.Command("epmd", "-port", strconv.Itoa(epmdPort), "-kill")
		kill.Env = env
		_ = kill.Run()
	}
	b.amqpURL = fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", amqpPort)
	b.mqttURL = fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort)
	deadline := time.Now().Add(120 * time.Second)
	for {
		if !b.running() {
			b.stopFn()
			return nil, fmt.Errorf("rabbitmq exited during start; see %s and %s", b.logPath, filepath.Join(rdir, "log"))
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			b.stop(20 * time.Second)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("rabbitmq not ready within 120 s; see %s", filepath.Join(rdir, "log"))
		}
		if v, err := probeAMQP(b.amqpURL); err == nil {
			if probeMQTT(b.mqttURL) == nil {
				b.version = v
				break
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The sampled process is the Erlang VM, a child of the script.
	if pid := findDescendant(b.pid, "beam.smp"); pid != 0 {
		b.pid = pid
	}
	return b, nil
}

var errNotInstalled = errors.New("not installed (make bench-deps installs it)")

func startMosquitto(ctx context.Context, benchDir, dir string) (*brokerProc, error) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
			return nil, errNotInstalled
		}
		bin = "/usr/sbin/mosquitto"
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf, err := fillTemplate(benchDir, "mosquitto.conf", map[string]string{"MQTT_PORT": strconv.Itoa(port)})
	if err != nil {
		return nil, err
	}
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	b, err := startProcess(exec.Command(bin, "-c", confPath), filepath.Join(dir, "mosquitto.log"), nil)
	if err != nil {
		return nil, err
	}
	b.name = "mosquitto"
	b.mqttURL = fmt.Sprintf("tcp://127.0.0.1:%d", port)
	if out, err := exec.Command(bin, "-h").Output(); err == nil || len(out) > 0 {
		first, _, _ := strings.Cut(string(out), "\n")
		b.version = strings.TrimSpace(strings.TrimPrefix(first, "mosquitto version"))
	}
	deadline := time.Now().Add(20 * time.Second)
	for probeMQTT(b.mqttURL) != nil {
		if !b.running() {
			return nil, fmt.Errorf("mosquitto exited during start; see %s", b.logPath)
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			b.stop(5 * time.Second)
			return nil, fmt.Errorf("mosquitto not ready within 20 s; see %s", b.logPath)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return b, nil
}

// probeAMQP opens and closes an AMQP connection and returns the server's
// version property.
func probeAMQP(url string) (string, error) {
	c, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		return "", err
	}
	defer c.Close()
	v, _ := c.Properties["version"].(string)
	return v, nil
}

// probeMQTT connects, waits for a successful CONNACK and disconnects.
func probeMQTT(url string) error {
	t, err := parseMQTTURL(url)
	if err != nil {
		return err
	}
	c, err := idleConn(&net.Dialer{Timeout: idleTimeout}, t.addr, t, 3, newRunID())
	if err != nil {
		return err
	}
	_, _ = c.Write([]byte{0xe0, 0})
	return c.Close()
}

// findDescendant returns the pid of the first process named comm below
// pid, or 0.
func findDescendant(pid int, comm string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	parent := map[int]int{}
	name := map[int]string{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		open, close := strings.IndexByte(string(stat), '('), strings.LastIndexByte(string(stat), ')')
		if open < 0 || close < open {
			continue
		}
		f := strings.Fields(string(stat[close+1:]))
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parent[p] = pp
		name[p] = string(stat[open+1 : close])
	}
	for p, n := range name {
		if n != comm {
			continue
		}
		for q := p; q > 1; q = parent[q] {
			if q == pid {
				return p
			}
		}
	}
	return 0
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
