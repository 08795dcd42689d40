package interop_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

const (
	damageQueueMsgs = 3000
	damageRetained  = 50
)

var damageQueues = []string{"dmg-a", "dmg-b"}

// damagedDataDir runs the broker once to fill a data directory with
// confirmed messages in two durable queues and retained MQTT messages, and
// stops it cleanly.
func damagedDataDir(t *testing.T) string {
	t.Helper()
	b := StartBroker(t, "--http-listen", "")
	_, ch := dialBroker(t, b)
	for _, q := range damageQueues {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	p := newPublisher(t, ch, 200)
	for _, q := range damageQueues {
		for i := range damageQueueMsgs {
			if !p.publish("", q, uint64(i), 1000) {
				t.Fatal("publish failed")
			}
		}
	}
	for p.inflight > 0 {
		if !p.await(confirmWait) {
			t.Fatal("confirm missing or nacked")
		}
	}
	pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "retainer"})
	for i := range damageRetained {
		pub.PublishAcked(t, &paho.Publish{Topic: fmt.Sprintf("dmg/r/%d", i), QoS: 1, Retain: true, Payload: []byte(strings.Repeat("r", 300))})
	}
	if err := b.Stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	return b.DataDir
}

func copyDataDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		src, err := os.Open(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(to, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		dst.Close()
	}
	return to
}

func damageFile(t *testing.T, path, kind string) {
	t.Helper()
	switch kind {
	case "truncated":
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
	case "flipped":
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(7, 9))
		for range 100 {
			data[8+r.IntN(len(data)-8)] ^= 0xff
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	case "deleted":
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
	}
}

// runToExit runs the broker on dir and waits for it to exit on its own.
func runToExit(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferrymqBinary(t), append([]string{
		"--amqp-listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--mqtt-ws-listen", "127.0.0.1:0",
		"--http-listen", "", "--data-dir", dir}, args...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the broker did not exit within 30 s on a damaged data directory:\n%s", out)
	}
	return string(out), err
}

var lostLine = regexp.MustCompile(`msg="repair: messages lost[^"]*".*? queue=(\S*?)(dmg-[ab]) messages=(\d+)`)

// TestDamagedDataDir damages each kind of file of a copy of a data
// directory holding confirmed messages and retained messages: cut to half,
// 100 bytes flipped, deleted. Without --repair the broker refuses to start,
// exits non-zero and names the damaged file; with --repair it starts if it
// can, and what it reports lost plus what it serves is exactly what was
// confirmed. Never a panic, never a broker that starts with less and says
// nothing.
func TestDamagedDataDir(t *testing.T) {
	base := damagedDataDir(t)
	files := map[string]string{}
	entries, _ := os.ReadDir(base)
	for _, e := range entries {
		for _, suffix := range []string{".sst", ".vlog", "MANIFEST"} {
			if strings.HasSuffix(e.Name(), suffix) && files[suffix] == "" {
				files[suffix] = e.Name()
			}
		}
	}
	if len(files) != 3 {
		t.Fatalf("data directory holds %v; want a table, a value log and a MANIFEST", entries)
	}
	for _, suffix := range []string{".sst", ".vlog", "MANIFEST"} {
		for _, kind := range []string{"truncated", "flipped", "deleted"} {
			victim := files[suffix]
			t.Run(victim+" "+kind, func(t *testing.T) {
				dir := copyDataDir(t, base)
				damageFile(t, filepath.Join(dir, victim), kind)
				out, err := runToExit(t, dir)
				if err == nil {
					t.Fatalf("the broker exited 0 on a damaged %s:\n%s", victim, out)
				}
				if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
					t.Fatalf("panic:\n%s", out)
				}
				named := victim
				if suffix == "MANIFEST" && kind == "deleted" {
					named = "no MANIFEST"
				}
				if !strings.Contains(out, named) {
					t.Errorf("the refusal does not name %s:\n%s", named, out)
				}

				// With --repair.
				dir = copyDataDir(t, base)
				damageFile(t, filepath.Join(dir, victim), kind)
				ok := suffix == ".vlog" || (suffix == "MANIFEST" && kind == "truncated")
				if !ok {
					out, err := runToExit(t, dir, "--repair")
					if err == nil || !strings.Contains(out, named) {
						t.Errorf("--repair on a damaged %s: exit %v\n%s", victim, err, out)
					}
					return
				}
				b := StartBroker(t, "--data-dir", dir, "--repair", "--http-listen", "")
				lost := map[string]int{}
				for _, m := range lostLine.FindAllStringSubmatch(b.Output(), -1) {
					n, _ := strconv.Atoi(m[3])
					lost[m[2]] += n
				}
				conn, _ := dialBroker(t, b)
				for _, q := range damageQueues {
					ch, err := conn.Channel()
					if err != nil {
						t.Fatal(err)
					}
					qi, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
					if err != nil {
						// The queue's record went with a dropped table:
						// all its messages must be reported lost.
						if lost[q] != damageQueueMsgs {
							t.Errorf("queue %s after --repair: %v; %d messages reported lost", q, err, lost[q])
						}
						continue
					}
					if qi.Messages+lost[q] != damageQueueMsgs {
						t.Errorf("queue %s: %d served + %d reported lost != %d confirmed", q, qi.Messages, lost[q], damageQueueMsgs)
					}
					// Everything served can be read.
					got := 0
					for {
						d, ok, err := ch.Get(q, true)
						if err != nil {
							t.Fatalf("get from %s: %v", q, err)
						}
						if !ok {
							break
						}
						if len(d.Body) != 1000 {
							t.Fatalf("%s: a body of %d bytes", q, len(d.Body))
						}
						got++
					}
					if got != qi.Messages {
						t.Errorf("queue %s: %d messages announced, %d delivered", q, qi.Messages, got)
					}
				}
				retainedLost := 0
				if m := regexp.MustCompile(`started with --repair.* retained=(\d+)`).FindStringSubmatch(b.Output()); m != nil {
					retainedLost, _ = strconv.Atoi(m[1])
				}
				sub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "checker"})
				sub.SubscribeAt(t, 1, "dmg/r/#", "dmg/end")
				pub := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: "ender"})
				pub.Send(t, "dmg/end", 1, "end")
				retained := len(sub.Until(t, "end"))
				if retained+retainedLost != damageRetained {
					t.Errorf("%d retained served + %d reported lost != %d", retained, retainedLost, damageRetained)
				}
				t.Logf("--repair: lost %v and %d retained", lost, retainedLost)
			})
		}
	}
}
