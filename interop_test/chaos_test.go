package interop_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestChaosSoakShort is the short version of ferrybench's chaos-soak
// scenario (issue 15 item 9): 35 s of mixed load - MQTT QoS 1 and QoS 2
// persistent sessions (one subscriber slow), AMQP publisher confirms with a
// slow consumer, and a bridge to an upstream ferrymq through a proxy that
// cuts the uplink every few seconds - while the broker is killed with
// SIGKILL every ~8 s (at least 3 times: --min-kills) and started again on
// the same data directory. It fails if a message acknowledged to its
// publisher never arrives, if a stream's first arrivals leave publish
// order, if fewer than 3 kills happened (a restart too slow to leave room
// for them), or if the broker's RSS passes 384 MiB under --memory-limit
// 256MiB. The real clients are ferrybench's: amqp091-go and
// paho.mqtt.golang.
func TestChaosSoakShort(t *testing.T) {
	bin := ferrymqBinary(t)
	bench := filepath.Join(binDir, "ferrybench")
	if out, err := exec.Command("go", "build", "-o", bench, "github.com/ferrymq/ferrymq/cmd/ferrybench").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ferrybench: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bench, "--scenario", "chaos-soak", "--duration", "35s", "--kill-every", "8s", "--min-kills", "3",
		"--edge-bin", bin, "--broker-args", "--memory-limit 256MiB", "--max-rss", "384",
		"--json", "--progress=false", "--drain-idle", "1s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	t.Logf("ferrybench:\n%s", stderr.String())
	var res struct {
		OK        bool    `json:"ok"`
		Error     string  `json:"error"`
		Warning   string  `json:"warning"`
		Confirmed int64   `json:"confirmed"`
		Received  int64   `json:"received"`
		Lost      int64   `json:"lost_confirmed"`
		Dup       int64   `json:"dup"`
		Seconds   float64 `json:"seconds"`
		RSSKiB    int64   `json:"rss_kib"`
	}
	found := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if bytes.HasPrefix(sc.Bytes(), []byte("{")) {
			if jerr := json.Unmarshal(sc.Bytes(), &res); jerr != nil {
				t.Fatalf("ferrybench JSON line: %v", jerr)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("no result from ferrybench (%v)", err)
	}
	if !res.OK {
		t.Fatalf("chaos soak failed: %s", res.Error)
	}
	m := regexp.MustCompile(`(\d+) SIGKILLs survived`).FindStringSubmatch(res.Warning)
	if m == nil {
		t.Fatalf("no kill count in %q", res.Warning)
	}
	if kills, _ := strconv.Atoi(m[1]); kills < 3 {
		t.Fatalf("%d kills, want at least 3", kills)
	}
	if res.Confirmed == 0 || res.Lost != 0 {
		t.Fatalf("confirmed %d, lost %d", res.Confirmed, res.Lost)
	}
	t.Logf("%s; %d acknowledged, %d received, %d duplicates, peak RSS %d MiB", res.Warning, res.Confirmed, res.Received, res.Dup, res.RSSKiB/1024)
}
