// Package console is ferrymq's web console: a single page of plain HTML, CSS
// and JavaScript, embedded in the binary, that an operator opens in a browser
// at the management listener's root (http://host:15672/ by default).
//
// The page talks only to the RabbitMQ-compatible management API under /api/
// on the same origin, with HTTP basic auth. It keeps the credentials in the
// tab's sessionStorage, as RabbitMQ's management UI does, so they are gone
// when the tab closes, and it builds every piece of text from the API with
// textContent, never as markup. The page loads nothing from the network but
// its own three files and the API: no framework, no font, no CDN, and no
// build step.
//
// Handler serves the files; the management listener mounts it at "/", below
// its own /api/ routes.
package console

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// securityHeaders go on every response. The policy lets the page load
// scripts, styles and data only from its own origin, so a queue name or a
// message body that slipped through as markup could still run nothing, and
// forbids framing (clickjacking of the Delete buttons).
var securityHeaders = map[string]string{
	"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; " +
		"img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
	"X-Content-Type-Options": "nosniff",
	"X-Frame-Options":        "DENY",
	"Referrer-Policy":        "no-referrer",
}

// file is one embedded asset, prepared once: its type, a strong ETag of its
// content, and a gzip copy when that is smaller.
type file struct {
	name  string
	ctype string
	etag  string
	plain []byte
	gz    []byte // nil when gzip does not pay
}

// handler serves the prepared files; immutable after New.
type handler struct {
	files map[string]*file // by URL path: "/", "/console.js", ...
}

// Handler returns the console's http.Handler. It serves the page at "/" and
// "/index.html" and its assets beside it, answers GET and HEAD only (405
// otherwise) and 404 for any other path. Responses carry an ETag and
// Cache-Control: no-cache, so a browser revalidates and picks up a new
// binary's page at once, and are gzip-compressed for clients that accept it.
// The handler is safe for concurrent use.
func Handler() http.Handler {
	h, err := newHandler(assets)
	if err != nil {
		// The assets are compiled in; failing here is a build mistake that
		// every test of this package would show.
		panic(err)
	}
	return h
}

func newHandler(fsys fs.FS) (*handler, error) {
	sub, err := fs.Sub(fsys, "assets")
	if err != nil {
		return nil, fmt.Errorf("console: assets: %w", err)
	}
	h := &handler{files: make(map[string]*file)}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		f := &file{name: p, plain: data}
		f.ctype = mime.TypeByExtension(path.Ext(p))
		if f.ctype == "" {
			f.ctype = http.DetectContentType(data)
		}
		sum := sha256.Sum256(data)
		f.etag = `"` + hex.EncodeToString(sum[:12]) + `"`
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		zw.Write(data)
		zw.Close()
		if buf.Len() < len(data)*9/10 {
			f.gz = buf.Bytes()
		}
		h.files["/"+p] = f
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("console: assets: %w", err)
	}
	idx, ok := h.files["/index.html"]
	if !ok {
		return nil, fmt.Errorf("console: assets: no index.html")
	}
	h.files["/"] = idx
	return h, nil
}

// ServeHTTP serves one embedded file.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	for k, v := range securityHeaders {
		hdr.Set(k, v)
	}
	f, ok := h.files[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hdr.Set("Content-Type", f.ctype)
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("Vary", "Accept-Encoding")
	body := f.plain
	etag := f.etag
	if f.gz != nil && acceptsGzip(r) && r.Header.Get("Range") == "" {
		body = f.gz
		// A different representation needs its own validator.
		etag = strings.TrimSuffix(f.etag, `"`) + `-gz"`
		hdr.Set("Content-Encoding", "gzip")
	}
	hdr.Set("Etag", etag)
	// ServeContent answers If-None-Match with 304 and HEAD without a body.
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reports whether the request's Accept-Encoding lists gzip with a
// non-zero quality.
func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		q := strings.ReplaceAll(params, " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
