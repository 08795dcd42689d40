package interop_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// runBinary runs the ferrymq binary with args to its end and returns its
// stdout, stderr and exit status.
func runBinary(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferrymqBinary(t), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("ferrymq %q: %v", args, err)
	}
	return out.String(), errOut.String(), code
}

// TestBinaryVersion: --version prints the version on stdout and exits 0;
// a started broker logs the same version once, first.
func TestBinaryVersion(t *testing.T) {
	stdout, stderr, code := runBinary(t, "--version")
	m := regexp.MustCompile(`^ferrymq (\S+) go1\.\S+ \S+/\S+\n$`).FindStringSubmatch(stdout)
	if code != 0 || stderr != "" || m == nil {
		t.Fatalf("ferrymq --version: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	b := StartBroker(t)
	first, _, _ := strings.Cut(b.Output(), "\n")
	if !strings.Contains(first, `level=INFO msg="ferrymq starting" version=`+m[1]+" go=go1.") {
		t.Fatalf("first log line %q, want the start-up line with version %s", first, m[1])
	}
	if n := strings.Count(b.Output(), `msg="ferrymq starting"`); n != 1 {
		t.Fatalf("%d start-up lines, want 1", n)
	}
}

// TestBinaryConfigErrorsExit2: every mistake in the config file and the
// flags is reported in one message, with exit status 2 (as the README
// says), before the data directory is created or its store opened.
func TestBinaryConfigErrorsExit2(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	config := filepath.Join(dir, "ferrymq.yaml")
	file := `
max_connections: many
users:
  - {name: ops, password: a}
  - {name: ops, password: b}
bridges:
  - {name: cloud, url: "mqtts://cloud.example:8883", tls: {ca_file: /nonexistent/ca.pem}}
`
	if err := os.WriteFile(config, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := runBinary(t, "--config", config, "--data-dir", dataDir,
		"--mqtt-listen", "127.0.0.1", "--bridge-direction", "both")
	if code != 2 {
		t.Fatalf("exit status %d, want 2; stderr:\n%s", code, stderr)
	}
	for _, want := range []string{
		"ferrymq: config (file " + config + " and flags): 5 errors:\n",
		"\n  config file " + config + ": line 2: key max_connections: cannot unmarshal !!str `many` into int\n",
		"\n  user \"ops\" defined more than once in the file\n",
		"\n  --bridge-direction set without --bridge-url",
		"\n  mqtt_listen \"127.0.0.1\": want host:port or :port",
		"\n  bridge cloud: ca_file: open /nonexistent/ca.pem: no such file or directory\n",
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("data directory exists after a config error (%v): the store was opened first", err)
	}
}
