package mgmt

import (
	"net/http"

	"github.com/ferrymq/ferrymq/core"
)

// vhostJSON is a vhost as RabbitMQ's /api/vhosts shows it.
func (s *Server) vhostJSON(v *core.VHost) map[string]any {
	c := v.Counters()
	return map[string]any{
		"name":                    v.Name(),
		"description":             "",
		"tags":                    []string{},
		"metadata":                map[string]any{"description": "", "tags": []string{}},
		"default_queue_type":      "classic",
		"tracing":                 false,
		"cluster_state":           map[string]string{s.node(): "running"},
		"messages":                c.Totals.Ready + c.Totals.Unacked,
		"messages_ready":          c.Totals.Ready,
		"messages_unacknowledged": c.Totals.Unacked,
		"message_stats":           messageStats(fromCounters(c.Published, c.Queues), s.vhostRate(v.Name())),
	}
}

func (s *Server) vhosts(w http.ResponseWriter, r *Request) {
	var vs []*core.VHost
	for _, n := range s.opts.Broker.VHostNames() {
		if v := s.opts.Broker.VHost(n); v != nil && r.vhostAllowed(n) {
			vs = append(vs, v)
		}
	}
	writeListOf(w, r, vs, (*core.VHost).Name, s.vhostJSON)
}

func (s *Server) vhost(w http.ResponseWriter, r *Request) {
	if v, ok := s.vhostOf(w, r); ok {
		writeJSON(w, http.StatusOK, s.vhostJSON(v))
	}
}

// putVHost creates a vhost: 201, or 204 if it exists. It lasts until the
// broker stops unless the config file names it too.
func (s *Server) putVHost(w http.ResponseWriter, r *Request) {
	name := r.Var("vhost")
	if name == "" {
		badRequest(w, "vhost name is empty")
		return
	}
	if _, ok := decodeBody(w, r); !ok {
		return
	}
	if s.opts.Broker.VHost(name) != nil {
		noContent(w)
		return
	}
	s.opts.Broker.AddVHost(name)
	s.log.Info("http: vhost created", "vhost", name, "by", r.User.Name)
	w.WriteHeader(http.StatusCreated)
}

// deleteVHost deletes a vhost with everything in it; its connections are
// closed.
func (s *Server) deleteVHost(w http.ResponseWriter, r *Request) {
	name := r.Var("vhost")
	if err := s.opts.Broker.DeleteVHost(name); err != nil {
		coreError(w, err)
		return
	}
	s.log.Info("http: vhost deleted", "vhost", name, "by", r.User.Name)
	noContent(w)
}

// aliveness is GET /api/aliveness-test/{vhost}: declare the queue
// aliveness-test, publish a message to it and get it back.
func (s *Server) aliveness(w http.ResponseWriter, r *Request) {
	v, ok := s.vhostOf(w, r)
	if !ok || !s.may(w, r, v.Name(), core.KindQueue, "aliveness-test", core.Configure) {
		return
	}
	fail := func(err error) {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "failed", "reason": err.Error()})
	}
	if _, err := v.DeclareQueue(core.QueueDecl{Name: "aliveness-test"}); err != nil {
		fail(err)
		return
	}
	if _, err := v.Publish(&core.Message{RoutingKey: "aliveness-test", Body: []byte("test_message")}); err != nil {
		fail(err)
		return
	}
	q := v.Queue("aliveness-test")
	if q == nil {
		fail(errorf("queue aliveness-test vanished"))
		return
	}
	for {
		d, ok := q.Get(true)
		if !ok {
			fail(errorf("the test message did not come back"))
			return
		}
		if string(d.Msg.Body) == "test_message" {
			break
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
}
