// Package interop_test drives the real ferrymq binary with real clients: the
// binary is built once per test run, started on 127.0.0.1:0 listeners with a
// fresh data directory, and every wait is on an event with a deadline.
//
// Set FERRYMQ_BIN to test a binary built elsewhere instead.
package interop_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// readyTimeout bounds the wait for the listeners after start.
	readyTimeout = 20 * time.Second
	// stopTimeout bounds a graceful shutdown after SIGTERM.
	stopTimeout = 15 * time.Second
	// readyMsg starts the key-values of the line cmd/ferrymq logs (slog
	// TextHandler) once a listener accepts connections; proto=<name>
	// addr=<host:port> follow.
	readyMsg = `msg="listener ready" proto=`
)

// readyProtos are the listeners StartBroker waits for, as named by the
// proto= of their readiness lines.
var readyProtos = []string{"amqp", "mqtt", "mqtt-ws"}

var (
	binDir string // TestMain's temporary directory for the built binary

	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferrymq-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop_test:", err)
		os.Exit(2)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ferrymqBinary returns the path of the ferrymq binary, building it on the
// first call of the test run. A build failure fails every test that needs it.
func ferrymqBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("FERRYMQ_BIN"); p != "" {
			binPath = p
			return
		}
		goTool, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
		if err != nil {
			buildErr = err
			return
		}
		out := filepath.Join(binDir, "ferrymq")
		cmd := exec.Command(goTool, "build", "-o", out, "github.com/ferrymq/ferrymq/cmd/ferrymq")
		if msg, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/ferrymq: %v\n%s", err, msg)
			return
		}
		binPath = out
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Broker is a running ferrymq child process.
type Broker struct {
	// URL is the AMQP URL of the broker's listener, with the default user.
	URL string
	// Addr is the host:port the AMQP listener is bound to.
	Addr string
	// MQTTAddr is the host:port the MQTT (TCP) listener is bound to.
	MQTTAddr string
	// MQTTWSAddr is the host:port the MQTT-over-WebSocket listener is
	// bound to; the endpoint is ws://MQTTWSAddr/mqtt.
	MQTTWSAddr string
	// HTTPAddr is the host:port of the management HTTP listener, and
	// HTTPURL its base URL ("http://127.0.0.1:40125", no trailing slash);
	// both empty when the test turned it off (--http-listen "").
	HTTPAddr, HTTPURL string
	// DataDir is the broker's --data-dir, removed when the test ends.
	DataDir string
	// Cmd is the child process; Stop, Kill and WaitExit wait for it, so
	// never call Cmd.Wait directly.
	Cmd *exec.Cmd

	output  *syncBuffer   // stdout and stderr, as written
	shown   bool          // output already in a failure message
	outDone chan struct{} // closed when the stderr pipe reaches EOF
	exited  chan struct{} // closed when Cmd.Wait has returned
	waitErr error         // Cmd.Wait's result; read after exited is closed
}

// StartBroker starts ferrymq on 127.0.0.1:0 listeners with a fresh data
// directory and extra args appended, and returns once it logs that its AMQP,
// MQTT and MQTT-over-WebSocket listeners are ready. It fails the test, with
// the broker's output, if the broker exits first or is not ready within
// readyTimeout. The broker is killed when the test ends if it is still
// running, and its output is logged if the test failed.
func StartBroker(t testing.TB, args ...string) *Broker {
	t.Helper()
	return startBrokerVia(t, nil, args...)
}

// startBrokerVia is StartBroker with the binary run by the command wrap
// ("prlimit", "--nofile=300:300", "--"), which must exec it in its own
// process, so that Cmd is the broker's; nil runs it directly.
func startBrokerVia(t testing.TB, wrap []string, args ...string) *Broker {
	t.Helper()
	bin := ferrymqBinary(t)
	dataDir := t.TempDir()
	// A --data-dir in args wins (flags: the last one counts), and is what
	// a restart must reuse.
	for i, a := range args {
		if a == "--data-dir" && i+1 < len(args) {
			dataDir = args[i+1]
		}
	}
	args = append([]string{
		"--amqp-listen", "127.0.0.1:0",
		"--mqtt-listen", "127.0.0.1:0",
		"--mqtt-ws-listen", "127.0.0.1:0",
		"--http-listen", "127.0.0.1:0",
		"--data-dir", dataDir,
	}, args...)
	// The management listener is waited for too, unless the last
	// --http-listen turned it off.
	protos := readyProtos
	if httpListenArg(args) != "" {
		protos = append(slices.Clone(readyProtos), "http")
	}

	// A pipe of our own, not Cmd.StderrPipe: Cmd.Wait closes that one and
	// must not be called before it is drained, which would tie Wait to EOF.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	if len(wrap) > 0 {
		cmd = exec.Command(wrap[0], slices.Concat(wrap[1:], []string{bin}, args)...)
	}
	b := &Broker{
		DataDir: dataDir,
		Cmd:     cmd,
		output:  &syncBuffer{},
		outDone: make(chan struct{}),
		exited:  make(chan struct{}),
	}
	b.Cmd.Stdout = b.output
	b.Cmd.Stderr = pw
	err = b.Cmd.Start()
	pw.Close() // the child holds its own copy
	if err != nil {
		pr.Close()
		t.Fatalf("start %s: %v", bin, err)
	}

	ready := make(chan map[string]string, 1)
	go b.readStderr(pr, protos, ready)
	go func() {
		b.waitErr = b.Cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		if b.running() {
			b.Cmd.Process.Kill()
			<-b.exited
		}
		if t.Failed() && !b.shown {
			t.Logf("ferrymq %s output:\n%s", strings.Join(args, " "), b.Output())
		}
	})

	timer := time.NewTimer(readyTimeout)
	defer timer.Stop()
	select {
	case addrs := <-ready:
		b.Addr = addrs["amqp"]
		b.MQTTAddr = addrs["mqtt"]
		b.MQTTWSAddr = addrs["mqtt-ws"]
		if b.HTTPAddr = addrs["http"]; b.HTTPAddr != "" {
			b.HTTPURL = "http://" + b.HTTPAddr
		}
		b.URL = "amqp://guest:guest@" + b.Addr + "/"
		return b
	case <-b.exited:
		b.drainOutput()
		b.shown = true
		t.Fatalf("ferrymq exited before its listeners (%s) were ready: %v\noutput:\n%s",
			strings.Join(protos, ", "), b.waitErr, b.Output())
	case <-timer.C:
		b.Cmd.Process.Kill()
		<-b.exited
		b.drainOutput()
		b.shown = true
		t.Fatalf("ferrymq did not log %q for each of %s within %v\noutput:\n%s",
			readyMsg, strings.Join(protos, ", "), readyTimeout, b.Output())
	}
	return nil // not reached: t.Fatalf ends the test goroutine
}

// httpListenArg returns the value of the last --http-listen in args (flags:
// the last one counts).
func httpListenArg(args []string) string {
	v := ""
	for i, a := range args {
		switch {
		case (a == "--http-listen" || a == "-http-listen") && i+1 < len(args):
			v = args[i+1]
		case strings.HasPrefix(a, "--http-listen="):
			v = strings.TrimPrefix(a, "--http-listen=")
		}
	}
	return v
}

// readStderr copies the child's stderr into the output buffer line by line
// until EOF, sending the listener addresses by proto on ready once a
// readiness line has appeared for each of protos. It never blocks on
// anything but the pipe, so the child never stalls on a full stderr.
func (b *Broker) readStderr(r *os.File, protos []string, ready chan<- map[string]string) {
	defer close(b.outDone)
	defer r.Close()
	br := bufio.NewReader(r)
	addrs := make(map[string]string, len(protos))
	sent := false
	for {
		line, err := br.ReadString('\n')
		b.output.WriteString(line)
		if !sent {
			if proto, addr, ok := parseReadyLine(line); ok {
				if _, dup := addrs[proto]; !dup {
					addrs[proto] = addr
				}
				if allReady(addrs, protos) {
					ready <- addrs // buffered, sent once
					sent = true
				}
			}
		}
		if err != nil {
			return
		}
	}
}

func allReady(addrs map[string]string, protos []string) bool {
	for _, p := range protos {
		if addrs[p] == "" {
			return false
		}
	}
	return true
}

// parseReadyLine returns the proto and addr values of a readiness line,
// which slog's TextHandler writes bare or, if they need quoting, as Go
// quoted strings.
func parseReadyLine(line string) (proto, addr string, ok bool) {
	i := strings.Index(line, readyMsg)
	if i < 0 {
		return "", "", false
	}
	rest := strings.TrimRight(line[i+len(readyMsg):], "\r\n")
	proto, rest, ok = cutLogValue(rest)
	if !ok {
		return "", "", false
	}
	rest, found := strings.CutPrefix(rest, " addr=")
	if !found {
		return "", "", false
	}
	addr, _, ok = cutLogValue(rest)
	if !ok || proto == "" || addr == "" {
		return "", "", false
	}
	return proto, addr, true
}

// cutLogValue splits the slog TextHandler value at the start of s, bare or
// Go quoted, from the rest of the line.
func cutLogValue(s string) (v, rest string, ok bool) {
	if strings.HasPrefix(s, `"`) {
		q, err := strconv.QuotedPrefix(s)
		if err != nil {
			return "", "", false
		}
		v, _ = strconv.Unquote(q)
		return v, s[len(q):], true
	}
	if j := strings.IndexByte(s, ' '); j >= 0 {
		return s[:j], s[j:], true
	}
	return s, "", true
}

// drainOutput waits briefly for the rest of the output of an exited child.
func (b *Broker) drainOutput() {
	select {
	case <-b.outDone:
	case <-time.After(2 * time.Second): // a grandchild may hold the pipe
	}
}

// Output returns everything the broker has written to stdout and stderr.
func (b *Broker) Output() string { return b.output.String() }

func (b *Broker) running() bool {
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}

// Signal sends sig to the broker process.
func (b *Broker) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := b.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// Exited is closed when the broker process has exited.
func (b *Broker) Exited() <-chan struct{} { return b.exited }

// WaitExit waits up to d for the broker to exit and returns what Cmd.Wait
// returned: nil for exit status 0, an *exec.ExitError otherwise. If the
// broker is still running after d it is killed and the test fails.
func (b *Broker) WaitExit(t testing.TB, d time.Duration) error {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-b.exited:
		b.drainOutput()
		return b.waitErr
	case <-timer.C:
		b.Cmd.Process.Kill()
		<-b.exited
		t.Fatalf("ferrymq still running %v after it was asked to stop; killed", d)
		return nil
	}
}

// Stop sends SIGTERM and waits up to stopTimeout for the broker to exit,
// returning what WaitExit returns.
func (b *Broker) Stop(t testing.TB) error {
	t.Helper()
	if !b.running() {
		return b.waitErr
	}
	b.Signal(t, syscall.SIGTERM)
	return b.WaitExit(t, stopTimeout)
}

// Kill sends SIGKILL, as a crash would, and waits for the process to go.
func (b *Broker) Kill(t testing.TB) {
	t.Helper()
	if !b.running() {
		return
	}
	if err := b.Cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("kill: %v", err)
	}
	<-b.exited
	b.drainOutput()
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

var _ io.Writer = (*syncBuffer)(nil)

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) WriteString(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.WriteString(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
