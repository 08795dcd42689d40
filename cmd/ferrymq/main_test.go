package main

import (
	"bufio"
	"bytes"
	"context"
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
	return []string{"--amqp-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--mqtt-ws-listen", "127.0.0.1:0"}
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
// submatches.
func waitFor(t *testing.T, log *syncBuffer, re *regexp.Regexp) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
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
	waitFor(t, &log, regexp.MustCompile(`msg="listener ready" proto=mqtt-ws addr=\S+`))
	if n := strings.Count(log.String(), `msg="listener ready"`); n != 3 {
		t.Fatalf("%d listener ready lines, want 3 (amqp, mqtt, mqtt-ws):\n%s", n, log.String())
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
