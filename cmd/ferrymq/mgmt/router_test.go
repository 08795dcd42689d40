package mgmt

import (
	"net/http"
	"reflect"
	"testing"
)

// TestRouterMatch: segments are matched escaped-path first, so an
// encoded "/" stays in its variable; literals beat variables; a known
// path with another method is found (405), an unknown one is not (404).
func TestRouterMatch(t *testing.T) {
	var rt router
	h := func(name string) HandlerFunc {
		return func(w http.ResponseWriter, r *Request) { w.Header().Set("X-Route", name) }
	}
	rt.add("GET", "/api/queues/{vhost}/{name}", Management, h("queue"))
	rt.add("GET", "/api/queues/{vhost}/{name}/bindings", Management, h("bindings"))
	rt.add("GET", "/api/vhosts/{vhost}/connections", Management, h("vconns"))
	rt.add("GET", "/api/vhosts/{vhost}/{other}", Management, h("vother"))
	rt.add("GET", "/api/overview", Management, h("overview"))
	for _, tc := range []struct {
		method, path string
		route        string
		vars         map[string]string
		found        bool
	}{
		{"GET", "/api/queues/%2F/a%2Fb", "queue", map[string]string{"vhost": "/", "name": "a/b"}, true},
		{"GET", "/api/queues/%2F/q/bindings", "bindings", map[string]string{"vhost": "/", "name": "q"}, true},
		{"GET", "/api/vhosts/v1/connections", "vconns", map[string]string{"vhost": "v1"}, true},
		{"GET", "/api/vhosts/v1/x", "vother", map[string]string{"vhost": "v1", "other": "x"}, true},
		{"HEAD", "/api/overview/", "overview", nil, true},
		{"DELETE", "/api/overview", "", nil, true},
		{"GET", "/api/nothing", "", nil, false},
	} {
		segs, ok := splitPath(tc.path)
		if !ok {
			t.Fatalf("%s: bad path", tc.path)
		}
		r, vars, found := rt.match(tc.method, segs)
		got := ""
		if r != nil {
			rec := make(http.Header)
			r.h(headerWriter(rec), &Request{})
			got = rec.Get("X-Route")
		}
		if got != tc.route || found != tc.found || (tc.vars != nil && !reflect.DeepEqual(vars, tc.vars)) {
			t.Errorf("%s %s: route %q vars %v found %v; want %q %v %v", tc.method, tc.path, got, vars, found, tc.route, tc.vars, tc.found)
		}
	}
}

// headerWriter is a ResponseWriter that keeps only headers.
type headerWriter http.Header

func (h headerWriter) Header() http.Header         { return http.Header(h) }
func (h headerWriter) Write(b []byte) (int, error) { return len(b), nil }
func (h headerWriter) WriteHeader(int)             {}
