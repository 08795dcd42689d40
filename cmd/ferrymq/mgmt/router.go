package mgmt

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/ferrymq/ferrymq/core"
)

// HandlerFunc handles one API request of an authenticated user.
type HandlerFunc func(w http.ResponseWriter, r *Request)

// Request is an API request: the HTTP request, the authenticated user
// and the path's variables.
type Request struct {
	*http.Request
	User *core.Principal
	vars map[string]string
	srv  *Server
}

// Var returns the path variable name ("vhost" of /api/queues/{vhost}),
// percent-decoded.
func (r *Request) Var(name string) string { return r.vars[name] }

// route is one API route; segs are the pattern's path segments after
// /api/, "{x}" marking a variable.
type route struct {
	method string
	segs   []string
	need   Level
	h      HandlerFunc
}

// router matches API paths segment by segment on the escaped path, so
// that an encoded "/" (vhost "/" is %2F) stays inside its segment.
type router struct{ routes []route }

func (rt *router) add(method, pattern string, need Level, h HandlerFunc) {
	p := strings.TrimPrefix(pattern, "/api/")
	var segs []string
	if p != "" {
		segs = strings.Split(p, "/")
	}
	rt.routes = append(rt.routes, route{method: method, segs: segs, need: need, h: h})
}

// moreSpecific reports whether a should win over b when both match: at
// the first segment where one has a literal and the other a variable,
// the literal wins (/api/queues/{vhost}/{name}/get over a variable
// third segment).
func moreSpecific(a, b *route) bool {
	for i := range a.segs {
		if av, bv := isVar(a.segs[i]), isVar(b.segs[i]); av != bv {
			return bv
		}
	}
	return false
}

func isVar(seg string) bool { return strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}") }

// splitPath returns the decoded segments of an escaped path after
// /api/; ok is false if a segment does not decode.
func splitPath(escaped string) ([]string, bool) {
	p := strings.TrimPrefix(escaped, "/api")
	p = strings.TrimPrefix(p, "/")
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return nil, true
	}
	raw := strings.Split(p, "/")
	out := make([]string, len(raw))
	for i, s := range raw {
		d, err := url.PathUnescape(s)
		if err != nil {
			return nil, false
		}
		out[i] = d
	}
	return out, true
}

// match finds the route for method and segs. found reports whether any
// route has this path (for 405 rather than 404).
func (rt *router) match(method string, segs []string) (r *route, vars map[string]string, found bool) {
	for i := range rt.routes {
		c := &rt.routes[i]
		if len(c.segs) != len(segs) {
			continue
		}
		var v map[string]string
		ok := true
		for j, s := range c.segs {
			if isVar(s) {
				if v == nil {
					v = make(map[string]string, 2)
				}
				v[s[1:len(s)-1]] = segs[j]
				continue
			}
			if s != segs[j] {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		found = true
		if (c.method == method || (method == http.MethodHead && c.method == http.MethodGet)) && (r == nil || moreSpecific(c, r)) {
			r, vars = c, v
		}
	}
	if r != nil {
		return r, vars, true
	}
	return nil, nil, found
}

// serveAPI authenticates, routes and runs an API request.
func (s *Server) serveAPI(w http.ResponseWriter, hr *http.Request) {
	segs, ok := splitPath(hr.URL.EscapedPath())
	if !ok {
		writeError(w, http.StatusBadRequest, "bad_request", "bad path encoding")
		return
	}
	rt, vars, found := s.api.match(hr.Method, segs)
	if rt == nil {
		if found {
			w.Header().Set("Allow", "GET, PUT, POST, DELETE")
			writeError(w, http.StatusMethodNotAllowed, "Method Not Allowed", "Method Not Allowed")
			return
		}
		notFound(w)
		return
	}
	p, ok := s.authenticate(w, hr)
	if !ok {
		return
	}
	if !p.allowed(rt.need) {
		notAuthorised(w, rt.need.refusal())
		return
	}
	rt.h(w, &Request{Request: hr, User: p.Principal, vars: vars, srv: s})
}
