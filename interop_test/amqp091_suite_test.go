//go:build amqp091suite && unix

package interop_test

import (
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// suiteHTTPAddr is where the suite's recovery tests (recovery_test.go)
// find the management API: internal/utils hard-wires
// http://localhost:15672/api/connections to find and drop connections.
// This test therefore takes the fixed port 15672, and helpers run it
// under flock /tmp/port15672.lock (make interop-amqp091 does).
const suiteHTTPAddr = "127.0.0.1:15672"

// suiteSkips are the tests of amqp091-go's integration suite that need
// something of RabbitMQ's other than AMQP 0-9-1, or that only work against a
// server calling itself RabbitMQ, with the reason for each.
// Everything else in the package runs against ferrymq, unit tests included.
//
// Not skipped, though they look TLS-related: TestTLSHandshake runs its own
// in-process TLS server with certificates embedded in tls_test.go and never
// dials AMQP_URL; TestPlaintextDialTLS dials AMQP_URL with DialTLS over a
// plain amqp:// URL, which needs only the plaintext listener.
var suiteSkips = []struct{ pattern, reason string }{
	// Raises an alarm with `rabbitmqctl set_vm_memory_high_watermark`,
	// run directly or through `docker exec` (RABBITMQ_RABBITMQCTL_PATH).
	{`^TestConnection_Close_WhenMemoryAlarmIsActive$`, "drives rabbitmqctl to raise a memory alarm"},
	// These assert only when server-properties product is "RabbitMQ"; on
	// any other server they return without closing the connection they
	// opened, and goleak (TestMain in integration_test.go) then fails the
	// whole run for the leaked reader and heartbeater goroutines.
	{`^TestIntegrationRecoverNotImplemented$`, "RabbitMQ-only assertions; leaks its connection elsewhere"},
	{`^TestRabbitMQQueueTTLGet$`, "RabbitMQ-only assertions; leaks its connection elsewhere"},
	{`^TestRabbitMQQueueNackMultipleRequeue$`, "RabbitMQ-only assertions; leaks its connection elsewhere"},
	// Does err.(*Error).Code on the result of Flow(false) unchecked: it
	// passes only if the server refuses channel.flow active=false with 540
	// NOT_IMPLEMENTED, as RabbitMQ does, and panics (ending the whole run) if
	// the server answers flow-ok. ferrymq implements active=false as the
	// spec says (deliveries pause until active=true; amqp/e2e tests cover
	// it), which is more than RabbitMQ does, so this test cannot pass.
	{`^TestIntegrationConsumeFlow$`, "expects RabbitMQ's 540 for channel.flow active=false; nil-error panic otherwise"},
}

// skipRegexp joins suiteSkips and AMQP091_SUITE_SKIP, if set, into the
// suite's -skip.
func skipRegexp() string {
	var parts []string
	for _, s := range suiteSkips {
		parts = append(parts, s.pattern)
	}
	if extra := os.Getenv("AMQP091_SUITE_SKIP"); extra != "" {
		parts = append(parts, extra)
	}
	return strings.Join(parts, "|")
}

// TestAMQP091Suite runs amqp091-go's own integration suite (go test -tags
// integration in a copy of the module at the version go.mod requires)
// against a ferrymq binary. Its output streams into this test's output.
//
// Run it with a timeout above the suite's own 15 minutes:
//
//	go test -tags amqp091suite -run TestAMQP091Suite -v -timeout 20m ./interop_test/
//
// AMQP091_SUITE_RUN, if set, is passed to the suite as -run, to run a part;
// AMQP091_SUITE_SKIP, if set, is a regexp of more tests to skip.
func TestAMQP091Suite(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(goTool, "list", "-m", "-f", "{{.Dir}}", "github.com/rabbitmq/amqp091-go").Output()
	if err != nil {
		t.Fatalf("go list -m github.com/rabbitmq/amqp091-go: %v", err)
	}
	src := strings.TrimSpace(string(out))
	if src == "" {
		t.Fatal("amqp091-go is not in the module cache; run go mod download")
	}
	dir := filepath.Join(t.TempDir(), "amqp091-go")
	if err := copyTree(src, dir); err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}

	// Fail clearly rather than let 18 recovery tests fail one by one
	// against whatever holds the port.
	if ln, err := net.Listen("tcp", suiteHTTPAddr); err != nil {
		t.Fatalf("the amqp091-go recovery tests need the management API on %s (hard-wired in the suite), which is taken: %v; "+
			"stop what listens there (a RabbitMQ?) and run under flock /tmp/port15672.lock", suiteHTTPAddr, err)
	} else {
		ln.Close()
	}
	b := StartBroker(t, "--http-listen", suiteHTTPAddr)

	// The suite's own -timeout must fire before ours, so that it reports
	// which test hung instead of being killed without a word.
	suiteTimeout := 15 * time.Minute
	if dl, ok := t.Deadline(); ok {
		suiteTimeout = min(suiteTimeout, time.Until(dl)-time.Minute)
		if suiteTimeout <= 0 {
			t.Fatal("test deadline too close to run the suite; use -timeout 20m")
		}
	}
	args := []string{"test", "-tags", "integration", "-count=1", "-v",
		"-timeout", suiteTimeout.String(), "-skip", skipRegexp()}
	if run := os.Getenv("AMQP091_SUITE_RUN"); run != "" {
		args = append(args, "-run", run)
	}
	cmd := exec.CommandContext(t.Context(), goTool, append(args, "./")...)
	cmd.Dir = dir
	cmd.Env = suiteEnv(b.URL)
	// Own process group, so that cancelling kills the test binary that
	// go test runs, not only the go command.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	w := t.Output()
	cmd.Stdout, cmd.Stderr = w, w

	for _, s := range suiteSkips {
		t.Logf("skipping %s: %s", s.pattern, s.reason)
	}
	t.Logf("AMQP_URL=%s go %s ./ (in %s)", b.URL, strings.Join(args, " "), dir)
	if err := cmd.Run(); err != nil {
		t.Errorf("amqp091-go integration suite: %v", err)
	}
	if err := b.Stop(t); err != nil {
		t.Errorf("ferrymq exit after SIGTERM: %v", err)
	}
}

// suiteEnv is this process's environment for the suite's go test, with
// AMQP_URL pointing at ferrymq. -mod=mod lets it fetch its own test
// dependencies (go.uber.org/goleak) through GOPROXY into the module cache.
func suiteEnv(url string) []string {
	drop := regexp.MustCompile(`^(AMQP_URL|GOFLAGS|GOWORK|GOTOOLCHAIN|RABBITMQ_RABBITMQCTL_PATH)=`)
	var env []string
	for _, kv := range os.Environ() {
		if !drop.MatchString(kv) {
			env = append(env, kv)
		}
	}
	return append(env,
		"AMQP_URL="+url,
		"GOFLAGS=-mod=mod",
		"GOWORK=off",        // the copy is its own module, outside any workspace
		"GOTOOLCHAIN=local", // never download a toolchain for its go line
	)
}

// copyTree copies the directory src to dst. Module cache files are
// read-only, so the copy makes directories 0755 and files 0644 (keeping
// execute bits), letting go test write go.sum and the temp dir be removed.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil // the module cache holds no symlinks or devices
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return copyFile(path, target, 0o644|info.Mode().Perm()&0o111)
	})
}

func copyFile(src, dst string, perm fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
