package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

// TestMain lets a test re-run this test binary as the real ferrymq command
// (main, signals and os.Exit included) by setting FERRYMQ_RUN_MAIN=1.
func TestMain(m *testing.M) {
	if os.Getenv("FERRYMQ_RUN_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// readyLine is the line interop tests parse for the bound address.
// freePorts are the listen flags that keep a test off the default ports.
func freePorts() []string {
	return []string{"--amqp-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--mqtt-ws-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}
}

var readyLine = regexp.MustCompile(`msg="listener ready" proto=amqp addr=(\S+)`)

// syncBuffer is a bytes.Buffer that run's logger may write while the test
// reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls log until re matches or the deadline passes, and returns the
// submatches. The deadline is a broker start's, store included, under
// -race beside other packages' tests on a loaded machine: interop_test
// gives its binary, built without -race, 20 s.
func waitFor(t *testing.T, log *syncBuffer, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m := re.FindStringSubmatch(log.String()); m != nil {
			return m
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no line matching %s in log:\n%s", re, log.String())
	return nil
}

func TestRunLogsBoundAddressAndStops(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "nested", "data")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append(freePorts(), "--data-dir", dataDir), &log)
	}()

	addr := waitFor(t, &log, readyLine)[1]
	if strings.HasSuffix(addr, ":0") {
		t.Fatalf("logged addr=%s, want the bound port", addr)
	}
	waitFor(t, &log, regexp.MustCompile(`msg="listener ready" proto=http addr=\S+`))
	if n := strings.Count(log.String(), `msg="listener ready"`); n != 4 {
		t.Fatalf("%d listener ready lines, want 4 (amqp, mqtt, mqtt-ws, http):\n%s", n, log.String())
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial logged addr: %v", err)
	}
	conn.Close()
	if fi, err := os.Stat(dataDir); err != nil || !fi.IsDir() {
		t.Fatalf("data dir %s not created: %v", dataDir, err)
	}

	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("run returned %d, want %d; log:\n%s", code, exitOK, log.String())
		}
	case <-time.After(2 * shutdownTimeout):
		t.Fatal("run did not return after its context was cancelled")
	}
	if !strings.Contains(log.String(), `msg=stopped`) {
		t.Fatalf("no stopped line in log:\n%s", log.String())
	}
}

// TestDebugListenServesProfiles: --debug-listen serves Go's pprof, for
// profiling a running broker.
func TestDebugListenServesProfiles(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var log syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append(freePorts(), "--data-dir", t.TempDir(), "--debug-listen", "127.0.0.1:0"), &log)
	}()
	defer func() {
		cancel()
		<-done
	}()
	addr := waitFor(t, &log, regexp.MustCompile(`msg="listener ready" proto=debug addr=(\S+)`))[1]
	resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "heap profile") {
		t.Fatalf("GET /debug/pprof/heap: %s\n%.200s", resp.Status, body)
	}
}

func TestRunListenErrorNamesAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()

	var log syncBuffer
	code := run(context.Background(), append(freePorts(), "--amqp-listen", addr, "--data-dir", t.TempDir()), &log)
	if code != exitFailure {
		t.Fatalf("run returned %d, want %d; log:\n%s", code, exitFailure, log.String())
	}
	if want := `msg="cannot listen" proto=amqp addr=` + addr; !strings.Contains(log.String(), want) {
		t.Fatalf("log lacks %q:\n%s", want, log.String())
	}
}

func TestRunBadConfigIsUsageError(t *testing.T) {
	var log syncBuffer
	if code := run(context.Background(), []string{"--user", "nocolon"}, &log); code != exitUsage {
		t.Fatalf("run returned %d, want %d; output:\n%s", code, exitUsage, log.String())
	}
}

// TestSIGTERM runs the real main in a child process and checks the signal
// path: SIGTERM → shutdown → "stopped" → exit status 0.
func TestSIGTERM(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGTERM on windows")
	}
	cmd := exec.Command(os.Args[0], append(freePorts(), "--data-dir", t.TempDir())...)
	cmd.Env = append(os.Environ(), "FERRYMQ_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	var log syncBuffer
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		// Tee line by line so waitFor sees the ready line as soon as it is
		// written.
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			io.WriteString(&log, sc.Text()+"\n")
		}
	}()
	waitFor(t, &log, readyLine)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-copied // stderr must be drained before Wait closes the pipe
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ferrymq exited with %v after SIGTERM; log:\n%s", err, log.String())
	}
	if !strings.Contains(log.String(), "msg=stopped") {
		t.Fatalf("no stopped line after SIGTERM:\n%s", log.String())
	}
}

// runMain runs this test binary as the real ferrymq command with args and
// returns its stdout, stderr and exit status.
func runMain(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), "FERRYMQ_RUN_MAIN=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatalf("run ferrymq %q: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// TestVersionFlag: --version prints one line on stdout and exits 0,
// without starting anything.
func TestVersionFlag(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	stdout, stderr, code := runMain(t, "--version", "--data-dir", dataDir)
	if code != exitOK || stderr != "" {
		t.Fatalf("ferrymq --version: exit %d, stderr %q", code, stderr)
	}
	if want := "ferrymq " + buildVersion() + " " + runtime.Version() + " "; !strings.HasPrefix(stdout, want) || strings.Count(stdout, "\n") != 1 {
		t.Fatalf("ferrymq --version printed %q, want one line starting %q", stdout, want)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("--version touched the data directory: %v", err)
	}
}

func TestBuildVersion(t *testing.T) {
	// A test binary has no VCS stamp and the module version "(devel)".
	if v := buildVersion(); v != "devel" && !strings.HasPrefix(v, "devel-") && !strings.HasPrefix(v, "v") {
		t.Errorf("buildVersion() = %q without -ldflags", v)
	}
	old := version
	defer func() { version = old }()
	version = "v1.2.3-4-gabcdef"
	if v := buildVersion(); v != "v1.2.3-4-gabcdef" {
		t.Errorf("buildVersion() = %q with version set by -ldflags", v)
	}
}

// TestConfigErrorsExitBeforeStore: the real command with several config
// mistakes reports them all in one message and exits 2 before it creates
// (or opens) its data directory.
func TestConfigErrorsExitBeforeStore(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	path := filepath.Join(t.TempDir(), "ferrymq.yaml")
	if err := os.WriteFile(path, []byte("bridges:\n  - {name: up, url: 'mqtt://h:1883', direction: sideways}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runMain(t, "--config", path, "--data-dir", dataDir, "--amqp-listen", "localhost:99999", "--bridge-topic", "a/#")
	if code != exitUsage {
		t.Fatalf("exit status %d, want %d; stderr:\n%s", code, exitUsage, stderr)
	}
	want := "ferrymq: config (file " + path + " and flags): 3 errors:\n" +
		"  --bridge-topic set without --bridge-url (links in the config file take these settings as keys of bridges:)\n" +
		"  amqp_listen \"localhost:99999\": port 99999 out of range 0..65535\n" +
		"  bridge up: direction \"sideways\": want out, in or both\n"
	if stderr != want || stdout != "" {
		t.Fatalf("stderr:\n%s\nwant:\n%s(stdout %q)", stderr, want, stdout)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the data directory was created before the config was checked: %v", err)
	}
}

// TestRunLogFormatJSON: --log-format json logs one JSON object a line,
// starting with the version line.
func TestRunLogFormatJSON(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var log syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append(freePorts(), "--data-dir", t.TempDir(), "--log-format", "json"), &log)
	}()
	waitFor(t, &log, regexp.MustCompile(`"msg":"listener ready","proto":"mqtt-ws"`))
	cancel()
	if code := <-done; code != exitOK {
		t.Fatalf("run returned %d; log:\n%s", code, log.String())
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	for i, line := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %v\n%s", i+1, err, line)
		}
		if i == 0 && (rec["msg"] != "ferrymq starting" || rec["level"] != "INFO" || rec["version"] != buildVersion() || rec["go"] != runtime.Version()) {
			t.Errorf("first line %s, want the start-up line with the version", line)
		}
	}
}

// TestRunLogsRefusedLogins: a refused AMQP or MQTT login is logged at
// WARN with the user, the peer and the reason.
func TestRunLogsRefusedLogins(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var log syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append(freePorts(), "--data-dir", t.TempDir(), "--user", "ops:right", "--login-failure-delay", "0"), &log)
	}()
	defer func() {
		cancel()
		<-done
	}()
	amqpAddr := waitFor(t, &log, readyLine)[1]
	mqttAddr := waitFor(t, &log, regexp.MustCompile(`msg="listener ready" proto=mqtt addr=(\S+)`))[1]

	_, err := amqp091.DialConfig("amqp://ops:wrong@"+amqpAddr+"/", amqp091.Config{Dial: amqp091.DefaultDial(10 * time.Second)})
	var ae *amqp091.Error
	if !errors.As(err, &ae) || ae.Code != amqp091.AccessRefused {
		t.Fatalf("AMQP login with a wrong password: %v, want 403", err)
	}
	waitFor(t, &log, regexp.MustCompile(`level=WARN msg="amqp: login failed" user=ops peer=127\.0\.0\.1:\d+ mechanism=PLAIN reason=".*invalid credentials`))

	// A PLAIN response without its NUL separators never reaches a backend.
	_, err = amqp091.DialConfig("amqp://"+amqpAddr+"/", amqp091.Config{Dial: amqp091.DefaultDial(10 * time.Second), SASL: []amqp091.Authentication{malformedPlain{}}})
	if !errors.As(err, &ae) || ae.Code != amqp091.AccessRefused {
		t.Fatalf("AMQP login with a malformed PLAIN response: %v, want 403", err)
	}
	waitFor(t, &log, regexp.MustCompile(`level=WARN msg="amqp: login failed" peer=127\.0\.0\.1:\d+ mechanism=PLAIN reason=".*malformed response`))

	if _, ca, err := mqtttest.DialV5(t, mqttAddr, mqtttest.V5Options{ClientID: "dev1", Username: "nobody", Password: "x"}); err == nil || ca == nil || ca.ReasonCode != 0x86 {
		t.Fatalf("MQTT login of an unknown user: connack %+v, %v; want 0x86", ca, err)
	}
	waitFor(t, &log, regexp.MustCompile(`level=WARN msg="mqtt: login failed" user=nobody vhost=/ peer=127\.0\.0\.1:\d+ mechanism=mqtt client=dev1 reason=".*`))
}

// malformedPlain is a PLAIN login whose response lacks RFC 4616's NULs.
type malformedPlain struct{}

func (malformedPlain) Mechanism() string { return "PLAIN" }
func (malformedPlain) Response() string  { return "ops right" }

// TestListenerOff: an empty address turns that listener off, whichever it
// is; the others serve.
func TestListenerOff(t *testing.T) {
	for _, off := range []string{"amqp", "mqtt", "mqtt-ws"} {
		t.Run(off, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			var log syncBuffer
			done := make(chan int, 1)
			go func() {
				done <- run(ctx, append(freePorts(), "--"+off+"-listen", "", "--data-dir", t.TempDir()), &log)
			}()
			defer func() { cancel(); <-done }()
			// http is the last listener started: every other line is in by then.
			waitFor(t, &log, regexp.MustCompile(`msg="listener ready" proto=http addr=\S+`))
			for _, p := range []string{"amqp", "mqtt", "mqtt-ws"} {
				on := strings.Contains(log.String(), `msg="listener ready" proto=`+p+` `)
				if on == (p == off) {
					t.Errorf("--%s-listen \"\": listener %s on = %v\n%s", off, p, on, log.String())
				}
			}
		})
	}
}
