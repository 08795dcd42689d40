package console

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestHandlerServesAssets(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	index, err := fs.ReadFile(assets, "assets/index.html")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path string
		header             map[string]string
		wantStatus         int
		wantType           string // prefix
		wantEncoding       string
		wantBody           []byte // plain body, after gunzip; nil: not checked
	}{
		{name: "root is the page", method: "GET", path: "/", wantStatus: 200, wantType: "text/html", wantBody: index},
		{name: "index.html", method: "GET", path: "/index.html", wantStatus: 200, wantType: "text/html", wantBody: index},
		{name: "script", method: "GET", path: "/console.js", wantStatus: 200, wantType: "text/javascript"},
		{name: "style", method: "GET", path: "/console.css", wantStatus: 200, wantType: "text/css"},
		{name: "icon", method: "GET", path: "/favicon.svg", wantStatus: 200, wantType: "image/svg+xml"},
		{name: "gzip when accepted", method: "GET", path: "/console.js", header: map[string]string{"Accept-Encoding": "gzip, deflate"},
			wantStatus: 200, wantType: "text/javascript", wantEncoding: "gzip"},
		{name: "no gzip at q=0", method: "GET", path: "/console.js", header: map[string]string{"Accept-Encoding": "gzip;q=0"},
			wantStatus: 200, wantType: "text/javascript"},
		{name: "HEAD", method: "HEAD", path: "/", wantStatus: 200, wantType: "text/html"},
		{name: "unknown path", method: "GET", path: "/nope.js", wantStatus: 404},
		{name: "no directory listing", method: "GET", path: "/assets/", wantStatus: 404},
		{name: "POST refused", method: "POST", path: "/", wantStatus: 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			// An explicit Accept-Encoding stops net/http from asking for
			// gzip and decoding it behind our back.
			req.Header.Set("Accept-Encoding", "identity")
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("Content-Security-Policy %q", csp)
			}
			if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Error("no X-Content-Type-Options: nosniff")
			}
			if tc.wantStatus != 200 {
				return
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, tc.wantType) {
				t.Errorf("Content-Type %q, want %s", ct, tc.wantType)
			}
			if ce := resp.Header.Get("Content-Encoding"); ce != tc.wantEncoding {
				t.Errorf("Content-Encoding %q, want %q", ce, tc.wantEncoding)
			}
			if resp.Header.Get("Etag") == "" || resp.Header.Get("Cache-Control") != "no-cache" {
				t.Errorf("Etag %q, Cache-Control %q", resp.Header.Get("Etag"), resp.Header.Get("Cache-Control"))
			}
			if tc.method == "HEAD" {
				if len(body) != 0 {
					t.Errorf("HEAD answered %d body bytes", len(body))
				}
				return
			}
			if tc.wantEncoding == "gzip" {
				zr, err := gzip.NewReader(bytes.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				if body, err = io.ReadAll(zr); err != nil {
					t.Fatal(err)
				}
				plain, _ := fs.ReadFile(assets, "assets"+tc.path)
				if !bytes.Equal(body, plain) {
					t.Error("gunzipped body differs from the asset")
				}
			}
			if tc.wantBody != nil && !bytes.Equal(body, tc.wantBody) {
				t.Errorf("body differs from the asset (%d bytes, want %d)", len(body), len(tc.wantBody))
			}
		})
	}
}

// TestHandlerRevalidates checks that a browser holding the page gets 304 for
// the same ETag, per representation, so reloading the console costs a round
// trip but no bytes.
func TestHandlerRevalidates(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for _, enc := range []string{"identity", "gzip"} {
		req, _ := http.NewRequest("GET", srv.URL+"/console.js", nil)
		req.Header.Set("Accept-Encoding", enc)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		etag := resp.Header.Get("Etag")
		req.Header.Set("If-None-Match", etag)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("%s: If-None-Match %s: status %d, want 304", enc, etag, resp.StatusCode)
		}
	}
}

// TestAssetsLoadNothingFromOutside keeps the console self-contained: no
// script, style, font or image from another origin, no inline script or
// style (the CSP refuses them), and no markup built from strings in the
// script, which is where API data could turn into HTML.
func TestAssetsLoadNothingFromOutside(t *testing.T) {
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import|fetch\(\s*["']https?:`)
	checks := []struct {
		file string
		bad  []*regexp.Regexp
	}{
		{"index.html", []*regexp.Regexp{external, regexp.MustCompile(`<script>`), regexp.MustCompile(`<style`), regexp.MustCompile(`\sstyle=`), regexp.MustCompile(`\son[a-z]+=`)}},
		{"console.css", []*regexp.Regexp{external}},
		{"console.js", []*regexp.Regexp{external, regexp.MustCompile(`innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function`)}},
	}
	for _, c := range checks {
		data, err := fs.ReadFile(assets, "assets/"+c.file)
		if err != nil {
			t.Fatal(err)
		}
		for _, re := range c.bad {
			if loc := re.FindIndex(data); loc != nil {
				t.Errorf("%s: %q matches %s", c.file, data[loc[0]:loc[1]], re)
			}
		}
	}
}
