package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// client calls the management API at one base URL with basic auth.
type client struct {
	base       string // scheme://host:port[/prefix], without a trailing slash
	user, pass string
	http       *http.Client
}

// newClient checks o's URL and builds the HTTP client. Credentials in the
// URL (http://user:pass@host:15672) are used unless --user or --password
// say otherwise.
func newClient(o options) (*client, error) {
	u, err := url.Parse(o.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: want http://host:port or https://host:port", o.url)
	}
	c := &client{user: o.user, pass: o.password, http: &http.Client{}}
	if u.User != nil && !o.userSet {
		c.user = u.User.Username()
		if p, ok := u.User.Password(); ok {
			c.pass = p
		}
	}
	u.User = nil
	c.base = strings.TrimSuffix(u.String(), "/")
	if o.caCert != "" {
		pem, err := os.ReadFile(o.caCert)
		if err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--cacert %s: no PEM certificate in it", o.caCert)
		}
		c.http.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	}
	return c, nil
}

// apiError is a non-2xx answer: RabbitMQ's error body is
// {"error": "not_found", "reason": "Object Not Found"}.
type apiError struct {
	status int
	text   string // "404 Not Found"
	kind   string // the body's "error"
	reason string // the body's "reason", or the body itself
}

func (e *apiError) Error() string {
	// RabbitMQ's 404 body is {"error":"Object Not Found","reason":"Not
	// Found"}, a 400's {"error":"bad_request","reason":"..."}: show what
	// the status line does not say already.
	msg := e.text
	var said []string
	for _, s := range []string{e.reason, e.kind} {
		if s != "" && s != http.StatusText(e.status) && (len(said) == 0 || said[0] != s) {
			said = append(said, s)
		}
	}
	if len(said) > 0 {
		msg += ": " + said[0]
	}
	if len(said) > 1 {
		msg += " (" + said[1] + ")"
	}
	if e.status == http.StatusUnauthorized && (e.reason == "" || strings.Contains(e.reason, "Login failed")) {
		msg += "; check --user and --password"
	}
	return msg
}

// netError is a broker that could not be reached at all.
type netError struct {
	base string
	err  error
}

func (e *netError) Error() string {
	return fmt.Sprintf("cannot reach the broker's management API at %s: %v (is ferrymq running, with --http-listen on that address?)", e.base, e.err)
}

func (e *netError) Unwrap() error { return e.err }

// path builds an API path from segments, escaping each one, so that the
// vhost "/" travels as %2F, as RabbitMQ wants it.
func path(segments ...string) string {
	var b strings.Builder
	b.WriteString("/api")
	for _, s := range segments {
		b.WriteByte('/')
		b.WriteString(url.PathEscape(s))
	}
	return b.String()
}

// do sends method to the API path of segments with body (JSON-encoded
// unless it is []byte) and headers, and decodes a JSON answer into out if
// out is not nil (a *[]byte gets the raw body).
func (c *client) do(ctx context.Context, method string, headers map[string]string, body, out any, segments ...string) error {
	return c.doPath(ctx, method, path(segments...), headers, body, out)
}

// doPath is do with a path already built (and a query, if any).
func (c *client) doPath(ctx context.Context, method, p string, headers map[string]string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, ok := body.([]byte)
		if !ok {
			var err error
			if b, err = json.Marshal(body); err != nil {
				return err
			}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+p, rd)
	if err != nil {
		return err
	}
	req.SetBasicAuth(c.user, c.pass)
	// No Accept header: RabbitMQ answers 406 to "Accept: application/json"
	// on resources without a body, such as a queue's /contents.
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in netError's message already
		}
		return &netError{base: c.base, err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return &netError{base: c.base, err: fmt.Errorf("reading the answer: %w", err)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &apiError{status: resp.StatusCode, text: resp.Status}
		var eb struct {
			Error  string `json:"error"`
			Reason string `json:"reason"`
		}
		if json.Unmarshal(data, &eb) == nil && (eb.Error != "" || eb.Reason != "") {
			e.kind, e.reason = eb.Error, eb.Reason
		} else {
			e.reason = strings.TrimSpace(string(data))
			if len(e.reason) > 200 {
				e.reason = e.reason[:200] + "..."
			}
		}
		return e
	}
	switch out := out.(type) {
	case nil:
		return nil
	case *[]byte:
		*out = data
		return nil
	default:
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(out); err != nil {
			return fmt.Errorf("%s %s: answer is not the JSON expected: %w", method, p, err)
		}
		return nil
	}
}
