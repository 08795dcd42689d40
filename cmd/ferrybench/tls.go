package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// tlsFlags are the --tls-* flags: how the TLS scenarios trust the broker
// and whether they present a client certificate.
type tlsFlags struct {
	ca, cert, key string
	insecure      bool
}

// clientConfig builds the client side of the TLS scenarios.
func (f *tlsFlags) clientConfig() (*tls.Config, error) {
	c := &tls.Config{InsecureSkipVerify: f.insecure}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", f.ca)
		}
	}
	if (f.cert == "") != (f.key == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	if f.cert != "" {
		pair, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// tlsVariant is the configuration a TLS scenario runs with: the TLS URLs
// in place of the plaintext ones.
func (cfg *config) tlsVariant() *config {
	c := *cfg
	c.amqpURL, c.mqttURL = cfg.amqpsURL, cfg.mqttsURL
	return &c
}

// tlsHandshakes runs full TLS handshakes (no session resumption) against
// the MQTT TLS listener, or the AMQP one without it, from a few
// goroutines for the run's duration: TCP connect, handshake, close.
func tlsHandshakes(ctx context.Context, r *run, res *result) error {
	addr := ""
	if r.cfg.mqttURL != "" {
		t, err := parseMQTTURL(r.cfg.mqttURL)
		if err != nil {
			return err
		}
		addr = t.addr
	} else {
		u, err := amqp.ParseURI(r.cfg.amqpURL)
		if err != nil {
			return fmt.Errorf("--amqps-url: %w", err)
		}
		addr = net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
	}
	tc := r.cfg.tlsConfig.Clone()
	tc.ClientSessionCache = nil // a full handshake each time
	duration := r.cfg.duration
	if duration <= 0 {
		duration = 5 * time.Second
	}
	self := startSampler(0)
	var broker *sampler
	if r.cfg.pid > 0 {
		broker = startSampler(r.cfg.pid)
	}
	var done, failed atomic.Int64
	var firstErr error
	var once sync.Once
	r.progress = func() (int64, int64) { return done.Load(), done.Load() }
	stopProgress := r.startProgress()
	ctx, cancel := context.WithTimeout(ctx, duration)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err == nil {
					var tlsConn *tls.Conn
					if tlsConn, err = tlsHandshake(c, addr, tc); err == nil {
						tlsConn.Close()
					}
				}
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					failed.Add(1)
					once.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	res.Published = done.Load()
	res.MsgPerSec = float64(done.Load()) / elapsed.Seconds()
	res.Seconds = elapsed.Seconds()
	_, _, res.ClientCPUPct, _ = self.finish()
	if broker != nil {
		res.RSSKiB, _, res.CPUPct, _ = broker.finish()
	}
	if firstErr != nil {
		return fmt.Errorf("%d handshakes failed, the first: %w", failed.Load(), firstErr)
	}
	return nil
}

// writeTLSRatios prints, for each TLS scenario run next to its plaintext
// one in the same invocation, the TLS rate as a fraction of plaintext.
func writeTLSRatios(w io.Writer, results []result) {
	plain := make(map[string]float64)
	for _, r := range results {
		if r.OK && r.MsgPerSec > 0 {
			plain[fmt.Sprintf("%s/%d", r.Scenario, r.Size)] = r.MsgPerSec
		}
	}
	header := false
	for _, r := range results {
		base, ok := strings.CutSuffix(r.Scenario, "-tls")
		p := plain[fmt.Sprintf("%s/%d", base, r.Size)]
		if !ok || !r.OK || p == 0 || base == "idle-mqtt-conns" {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\n| TLS vs plaintext | size | TLS msg/s | plaintext msg/s | ratio |")
			fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
			header = true
		}
		fmt.Fprintf(w, "| %s | %d | %s | %s | %.2f |\n", base, r.Size, human(r.MsgPerSec), human(p), r.MsgPerSec/p)
	}
}
