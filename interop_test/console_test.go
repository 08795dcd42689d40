package interop_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/ferrymq/ferrymq/mqtt/mqtttest"
)

const (
	// consoleWait bounds each wait on the page: the console polls the API
	// every 2 s in this test, and the machine may be loaded.
	consoleWait = 20 * time.Second
	// consoleTestTimeout bounds the whole browser session.
	consoleTestTimeout = 3 * time.Minute
)

// TestConsoleInChromium drives the web console in a real headless Chromium
// (Debian's chromium, /usr/bin/chromium, or $CHROMIUM) against the real
// binary, as an operator would. It logs in through the form (after a wrong
// password, which the page reports), then:
//   - watches a queue's depth go from 0 to 3 while the test publishes over
//     AMQP, and purges it from the queue's page (through the confirm
//     dialog) to 0;
//   - finds the last error of a bridge whose upstream (a second ferrymq)
//     refuses its password;
//   - closes an MQTT 5 connection from the connections page (the client
//     gets DISCONNECT 0x98), then sees its offline session and its retained
//     message on the MQTT page and removes the session;
//   - logs in again as a user with only the management tag, who stays
//     logged in and sees neither the admin tabs nor the bridges.
//
// Every wait is on the page's DOM, with a deadline. An uncaught JavaScript
// exception or a Content-Security-Policy violation in the page fails the
// test.
//
// Screenshots are kept as test artifacts in $FERRYMQ_ARTIFACTS, by default
// interop_test/artifacts/ (gitignored): console-queue.png,
// console-bridges.png, console-mqtt.png and console-overview.png, and
// console-failure.png when a step fails.
func TestConsoleInChromium(t *testing.T) {
	chromium := chromiumPath(t)
	artifacts := artifactsDir(t)

	// The upstream refuses the bridge: guest's password is not "wrong".
	upstream := StartBroker(t)
	b := StartBroker(t,
		"--bridge-url", "amqp://guest:wrong@"+upstream.Addr+"/",
		"--bridge-name", "uplink",
		"--bridge-topic", "console/#",
	)
	base := "http://" + b.HTTPAddr + "/"

	page := newChromium(t, chromium, artifacts)
	errs := pageErrors(page.ctx)

	// Log in through the form: a wrong password is refused on the page
	// (not by a browser prompt, which would hang a headless one), then the
	// right one lets the operator in.
	page.do(t, "log in with a wrong password",
		chromedp.Navigate(base),
		chromedp.WaitVisible(chromedp.ID("login-user")),
		chromedp.SendKeys(chromedp.ID("login-user"), "guest"),
		chromedp.SendKeys(chromedp.ID("login-pass"), "not-the-password"),
		chromedp.Click(chromedp.ID("login-submit")),
	)
	// The page empties the password field after a refusal.
	page.wait(t, "the refusal of the wrong password", `() => document.getElementById('login-error').textContent.startsWith('Login failed') &&
		document.getElementById('login-pass').value === ''`)
	page.do(t, "log in",
		chromedp.SendKeys(chromedp.ID("login-pass"), "guest"),
		chromedp.Click(chromedp.ID("login-submit")),
	)
	page.wait(t, "the console after login", `() => !document.getElementById('app').hidden`)
	// Poll every 2 s rather than 5, as an operator watching a queue would.
	page.do(t, "set refresh to 2 s", chromedp.SetValue(chromedp.ID("refresh-select"), "2"))

	t.Run("queue depth and purge", func(t *testing.T) { consoleQueue(t, page, base, b) })
	t.Run("bridge last error", func(t *testing.T) { consoleBridge(t, page, base) })
	t.Run("MQTT connection, session and retained", func(t *testing.T) { consoleMQTT(t, page, base, b) })

	page.do(t, "open the overview", chromedp.Navigate(base+"#/overview"))
	page.wait(t, "the overview's totals", `() => document.querySelector('[data-stat="queues"]') !== null`)
	page.screenshot(t, "console-overview.png")

	// Last: it logs guest out.
	t.Run("management user", func(t *testing.T) { consoleManagementUser(t, page, base, b) })

	if msgs := errs(); len(msgs) > 0 {
		t.Errorf("the page reported errors:\n%s", strings.Join(msgs, "\n"))
	}
}

// TestConsoleServed checks, without a browser, what the console relies on
// from the management listener: the page at /, with its security headers,
// beside the API; and a refused login answered without a WWW-Authenticate
// challenge to the page's requests (marked X-Requested-With), which would
// make a browser show its own prompt, but with one to other clients.
func TestConsoleServed(t *testing.T) {
	b := StartBroker(t)
	cl := http.Client{Timeout: consoleWait}
	get := func(path, user, pass string, hdr ...string) *http.Response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), "GET", b.HTTPURL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	for _, path := range []string{"/", "/console.js", "/console.css"} {
		resp := get(path, "", "")
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'none'") {
			t.Errorf("GET %s: %d, CSP %q; want 200 and the console's policy", path, resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
		}
	}
	if resp := get("/nope", "", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope: %d, want 404", resp.StatusCode)
	}
	tests := []struct {
		name, pass string
		hdr        []string
		wantStatus int
		wantChall  bool
	}{
		{"right password", "guest", nil, http.StatusOK, false},
		{"wrong password from a client", "wrong", nil, http.StatusUnauthorized, true},
		{"wrong password from the console", "wrong", []string{"X-Requested-With", "XMLHttpRequest"}, http.StatusUnauthorized, false},
	}
	for _, tc := range tests {
		resp := get("/api/whoami", "guest", tc.pass, tc.hdr...)
		chall := resp.Header.Get("WWW-Authenticate") != ""
		if resp.StatusCode != tc.wantStatus || chall != tc.wantChall {
			t.Errorf("%s: status %d, WWW-Authenticate %q; want %d, challenge %v",
				tc.name, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), tc.wantStatus, tc.wantChall)
		}
	}
}

// consoleQueue: a queue declared over AMQP shows with depth 0, then 3 once
// the test has published three messages; its page shows 3, and Purge with
// its confirm dialog brings it to 0, as AMQP then sees too.
func consoleQueue(t *testing.T, page *browserPage, base string, b *Broker) {
	const queue = "console.q"
	conn, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	depthCell := `#queues tr[data-name="` + queue + `"] td[data-col="messages"]`
	page.do(t, "open the queues page", chromedp.Navigate(base+"#/queues"))
	page.waitText(t, depthCell, "0")
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		dc, err := ch.PublishWithDeferredConfirm("", queue, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: fmt.Appendf(nil, "message %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(mqtttest.Ctx(t)); err != nil || !ok {
			t.Fatalf("publish %d: confirmed %v, %v", i, ok, err)
		}
	}
	page.waitText(t, depthCell, "3")

	page.do(t, "open the queue's page", chromedp.Click(chromedp.CSS(`#queues tr[data-name="`+queue+`"] td[data-col="name"] a`)))
	page.waitText(t, `[data-stat="messages"]`, "3")
	page.screenshot(t, "console-queue.png")
	page.do(t, "purge", chromedp.Click(chromedp.ID("purge")), chromedp.WaitVisible(chromedp.ID("confirm-ok")), chromedp.Click(chromedp.ID("confirm-ok")))
	page.waitText(t, `[data-stat="messages"]`, "0")
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Messages != 0 {
		t.Errorf("after the purge in the console, queue %s holds %d messages over AMQP, want 0", queue, q.Messages)
	}
}

// consoleBridge: the bridges page shows the link down with the upstream's
// refusal of its password as the last error.
func consoleBridge(t *testing.T, page *browserPage, base string) {
	page.do(t, "open the bridges page", chromedp.Navigate(base+"#/bridges"))
	row := `#bridges tr[data-name="uplink"]`
	page.wait(t, "the bridge's last error", `() => {
		const el = document.querySelector('`+row+` td[data-col="last_error"]');
		return !!el && /403|ACCESS_REFUSED|password/i.test(el.textContent);
	}`)
	page.waitText(t, row+` td[data-col="state"]`, "disconnected", "connecting")
	page.screenshot(t, "console-bridges.png")
}

// consoleMQTT: an MQTT 5 client with a persistent session and a retained
// message shows on the connections page beside the AMQP ones; closing it
// there disconnects the client (DISCONNECT 0x98, Administrative action);
// its session, now offline, and the retained message show on the MQTT page,
// where removing the session makes it go.
func consoleMQTT(t *testing.T, page *browserPage, base string, b *Broker) {
	const clientID = "console-sensor"
	// An AMQP connection beside it, for the page to list both protocols.
	conn, err := amqp.Dial(b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := mqtttest.ConnectV5(t, b.MQTTAddr, mqtttest.V5Options{ClientID: clientID, SessionExpiry: 3600})
	c.SubscribeAt(t, 1, "console/cmd/#")
	c.PublishAcked(t, &paho.Publish{Topic: "console/state", QoS: 1, Retain: true, Payload: []byte("on")})

	page.do(t, "open the connections page", chromedp.Navigate(base+"#/connections"))
	// The MQTT row, found by its protocol; its data-name is the
	// connection's name, which the Close button's selector needs.
	page.wait(t, "an MQTT 5.0 and an AMQP 0-9-1 connection", `() => {
		const rows = [...document.querySelectorAll('#connections tr[data-name]')];
		const proto = (tr) => (tr.querySelector('td[data-col="protocol"]') || {}).textContent || '';
		return rows.some((tr) => proto(tr) === 'MQTT 5.0') && rows.some((tr) => proto(tr).startsWith('AMQP'));
	}`)
	name, err := chromedp.Run(page.ctx, chromedp.Evaluate[string](`[...document.querySelectorAll('#connections tr[data-name]')]
		.find((tr) => tr.querySelector('td[data-col="protocol"]').textContent === 'MQTT 5.0').dataset.name`))
	if err != nil {
		page.fail(t, "read the MQTT connection's name", err)
	}
	page.do(t, "close the MQTT connection",
		chromedp.Click(chromedp.CSS(`#connections tr[data-name=`+strconv.Quote(name)+`] button`)),
		chromedp.WaitVisible(chromedp.ID("confirm-ok")),
		chromedp.Click(chromedp.ID("confirm-ok")),
	)
	d := mqtttest.WaitFor(t, c.Disconnects, consoleWait, "the DISCONNECT of the connection closed in the console")
	if d.ReasonCode != 0x98 {
		t.Errorf("DISCONNECT reason %#x, want 0x98 (Administrative action)", d.ReasonCode)
	}

	page.do(t, "open the MQTT page", chromedp.Navigate(base+"#/mqtt"))
	session := `#mqtt-sessions tr[data-name="` + clientID + `"]`
	page.waitText(t, session+` td[data-col="connected"]`, "offline")
	page.wait(t, "the retained message", `() => !!document.querySelector('#mqtt-retained tr[data-name="console/state"]')`)
	page.screenshot(t, "console-mqtt.png")
	page.do(t, "remove the session",
		chromedp.Click(chromedp.CSS(session+` button`)),
		chromedp.WaitVisible(chromedp.ID("confirm-ok")),
		chromedp.Click(chromedp.ID("confirm-ok")),
	)
	page.wait(t, "the session gone", `() => document.getElementById('view').dataset.loaded !== '' && !document.querySelector('`+session+`')`)
}

// consoleManagementUser: a user with only the management tag logs in and
// stays in, although the overview asks for things only monitoring users
// may see (RabbitMQ answers those with 401 too); the Admin, Definitions and
// Bridges tabs are hidden, and the queues of its vhost are listed.
func consoleManagementUser(t *testing.T, page *browserPage, base string, b *Broker) {
	for _, c := range []struct {
		path string
		body any
	}{
		{"/api/users/ops", map[string]any{"password": "ops-password", "tags": "management"}},
		{"/api/permissions/%2F/ops", map[string]any{"configure": ".*", "write": ".*", "read": ".*"}},
	} {
		if code, body := apiCall(t, b, "guest", "guest", "PUT", c.path, c.body); code/100 != 2 {
			t.Fatalf("PUT %s: %d %s", c.path, code, body)
		}
	}
	page.do(t, "log out and in as ops",
		chromedp.Navigate(base+"#/overview"),
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("login-user")),
		chromedp.SetValue(chromedp.ID("login-user"), "ops"),
		chromedp.SendKeys(chromedp.ID("login-pass"), "ops-password"),
		chromedp.Click(chromedp.ID("login-submit")),
	)
	page.wait(t, "the overview, as ops", `() => !document.getElementById('app').hidden &&
		document.getElementById('whoami').textContent.startsWith('ops') &&
		document.getElementById('view').dataset.loaded !== ''`)
	page.wait(t, "the admin tabs hidden", `() => ['admin', 'definitions', 'bridges']
		.every((v) => document.querySelector('#nav a[data-view="' + v + '"]').hidden)`)
	page.do(t, "open the queues page as ops", chromedp.Navigate(base+"#/queues"))
	page.wait(t, "console.q listed for ops", `() => !document.getElementById('app').hidden &&
		!!document.querySelector('#queues tr[data-name="console.q"]')`)
}

// chromiumPath returns the Chromium to drive: $CHROMIUM, else Debian's
// /usr/bin/chromium, else chromium on PATH. The console test needs a real
// browser, so a missing one fails the test with what to install; .ci/run
// installs Debian's package.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("chromium not found: the console test drives a real Chromium (apt-get install chromium, or set CHROMIUM)")
	return ""
}

// artifactsDir returns the directory that keeps the test's screenshots:
// $FERRYMQ_ARTIFACTS, by default artifacts/ beside this file.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("FERRYMQ_ARTIFACTS")
	if dir == "" {
		dir = "artifacts" // go test runs in the package directory
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts directory: %v", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// browserPage is one tab of a headless Chromium started for the test.
type browserPage struct {
	ctx       context.Context
	artifacts string
}

// newChromium starts a headless Chromium with a profile of its own and
// returns its tab. The browser is stopped when the test ends.
//
// The profile is chromedp's temporary one, not a t.TempDir: Chromium's
// child processes (zygote, network service, crashpad) can outlive the
// browser and write there a moment later, and t.TempDir's removal then
// fails the test with "directory not empty"; chromedp kills what is left
// of a browser it gave a profile and removes that with retries.
func newChromium(t *testing.T, chromium, artifacts string) *browserPage {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.WindowSize(1400, 1000),
	)
	if os.Geteuid() == 0 {
		// Chromium refuses to run as root with its sandbox on.
		opts = append(opts, chromedp.NoSandbox)
	}
	deadline, cancel := context.WithTimeout(context.Background(), consoleTestTimeout)
	actx, cancelAlloc := chromedp.NewExecAllocator(deadline, opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser to exit
		cancel()
	})
	// Start the browser now, so that a broken one fails here, clearly.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	return &browserPage{ctx: ctx, artifacts: artifacts}
}

// pageErrors collects the page's uncaught exceptions and CSP violations
// from now on; the returned func lists those seen so far.
func pageErrors(ctx context.Context) func() []string {
	msgs := chromedp.Console(ctx)
	got := make(chan string, 100)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
				select {
				case got <- m.String():
				default:
				}
			}
		}
	}()
	return func() []string {
		var out []string
		for {
			select {
			case m := <-got:
				out = append(out, m)
			default:
				return out
			}
		}
	}
}

// do runs actions on the page, failing the test (with a screenshot) on error.
func (p *browserPage) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(p.ctx, actions...); err != nil {
		p.fail(t, what, err)
	}
}

// wait polls fn, a JavaScript function of no arguments, in the page until it
// returns true, for at most consoleWait.
func (p *browserPage) wait(t *testing.T, what, fn string) {
	t.Helper()
	_, err := chromedp.Run(p.ctx, chromedp.PollFunction[bool](fn,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(consoleWait)))
	if err != nil {
		p.fail(t, "wait for "+what, err)
	}
}

// waitText waits until the element matching sel has one of the texts want
// (trimmed).
func (p *browserPage) waitText(t *testing.T, sel string, want ...string) {
	t.Helper()
	_, err := chromedp.Run(p.ctx, chromedp.PollFunction[bool](`(sel, want) => {
		const el = document.querySelector(sel);
		return !!el && want.includes(el.textContent.trim());
	}`, chromedp.WithPollingArgs(sel, want),
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(consoleWait)))
	if err != nil {
		p.fail(t, fmt.Sprintf("wait for %s to read %q", sel, want), err)
	}
}

// fail ends the test with what the page showed: the element texts the
// waits look at, the status line, and a screenshot.
func (p *browserPage) fail(t *testing.T, what string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(p.ctx), 10*time.Second)
	defer cancel()
	status, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.getElementById('status') || {}).textContent || ''`))
	view, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`((document.getElementById('view') || document.body).innerText || '').slice(0, 3000)`))
	shot := ""
	if buf, serr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); serr == nil {
		shot = filepath.Join(p.artifacts, "console-failure.png")
		if werr := os.WriteFile(shot, buf, 0o644); werr != nil {
			shot = werr.Error()
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("not within %v: %w", consoleWait, err)
	}
	t.Fatalf("console: %s: %v\nstatus line: %q\nscreenshot: %s\npage text:\n%s", what, err, status, shot, view)
}

// screenshot keeps a full-page PNG of the tab in the artifacts directory.
func (p *browserPage) screenshot(t *testing.T, name string) {
	t.Helper()
	// From the top, where the sticky header belongs in a full-page shot.
	if _, err := chromedp.Run(p.ctx, chromedp.Evaluate[chromedp.Void](`window.scrollTo(0, 0)`)); err != nil {
		p.fail(t, "scroll to the top", err)
	}
	buf, err := chromedp.Run(p.ctx, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		p.fail(t, "screenshot "+name, err)
	}
	path := filepath.Join(p.artifacts, name)
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}
