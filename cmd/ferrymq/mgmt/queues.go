package mgmt

import (
	"cmp"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/ferrymq/ferrymq/core"
)

// queueJSON is a queue as RabbitMQ's /api/queues shows it.
func (s *Server) queueJSON(q core.QueueSnapshot) map[string]any {
	args := jsonTable(q.Arguments)
	if args == nil {
		args = map[string]any{}
	}
	rate := s.queueRate(q.VHost, q.Name)
	zero := map[string]any{"rate": 0.0}
	m := map[string]any{
		"name":                            q.Name,
		"vhost":                           q.VHost,
		"durable":                         q.Durable,
		"auto_delete":                     q.AutoDelete,
		"exclusive":                       q.Exclusive,
		"arguments":                       args,
		"node":                            s.node(),
		"type":                            "classic",
		"state":                           "running",
		"policy":                          nil,
		"effective_policy_definition":     map[string]any{},
		"messages":                        q.Messages + q.Unacked,
		"messages_ready":                  q.Messages,
		"messages_unacknowledged":         q.Unacked,
		"messages_details":                zero,
		"messages_ready_details":          zero,
		"messages_unacknowledged_details": zero,
		"message_bytes":                   q.Bytes,
		"message_bytes_ready":             q.Bytes,
		"message_bytes_unacknowledged":    0,
		"consumers":                       q.Consumers,
		"consumer_capacity":               capacity(q.Consumers),
		"consumer_utilisation":            capacity(q.Consumers),
		"message_stats":                   messageStats(fromCounters(q.Counters.Published, q.Counters), rate),
	}
	return m
}

func capacity(consumers int) float64 {
	if consumers > 0 {
		return 1
	}
	return 0
}

// queueItems lists the queues of vhost ("" for all the user may see).
func (s *Server) queueItems(r *Request, vhost string) []*core.Queue {
	var out []*core.Queue
	for _, vh := range s.opts.Broker.VHostNames() {
		if (vhost != "" && vh != vhost) || !r.vhostAllowed(vh) {
			continue
		}
		if v := s.opts.Broker.VHost(vh); v != nil {
			out = append(out, v.QueueList()...)
		}
	}
	return out
}

func (s *Server) queues(w http.ResponseWriter, r *Request) {
	s.writeQueues(w, r, s.queueItems(r, ""))
}

func (s *Server) vhostQueues(w http.ResponseWriter, r *Request) {
	if _, ok := s.vhostOf(w, r); !ok {
		return
	}
	s.writeQueues(w, r, s.queueItems(r, r.Var("vhost")))
}

// writeQueues pages the queues before rendering them when the order is
// by name (the default), so that a page of 100 out of 100,000 renders
// 100; any other sort renders all first.
func (s *Server) writeQueues(w http.ResponseWriter, r *Request, qs []*core.Queue) {
	writeListOf(w, r, qs, func(q *core.Queue) string { return q.Name() },
		func(q *core.Queue) map[string]any { return s.queueJSON(q.Snapshot()) })
}

// lookupQueue returns the request's {vhost}/{name} queue, or answers 404.
func (s *Server) lookupQueue(w http.ResponseWriter, r *Request) (*core.VHost, *core.Queue, bool) {
	v, ok := s.vhostOf(w, r)
	if !ok {
		return nil, nil, false
	}
	q := v.Queue(r.Var("name"))
	if q == nil {
		notFound(w)
		return nil, nil, false
	}
	return v, q, true
}

func (s *Server) queue(w http.ResponseWriter, r *Request) {
	if _, q, ok := s.lookupQueue(w, r); ok {
		writeJSON(w, http.StatusOK, s.queueJSON(q.Snapshot()))
	}
}

// putQueue declares a queue: 201 when created, 204 when it already
// existed with the same properties, 400 when they differ.
func (s *Server) putQueue(w http.ResponseWriter, r *Request) {
	v, ok := s.vhostOf(w, r)
	if !ok {
		return
	}
	name := r.Var("name")
	body, ok := decodeBody(w, r)
	if !ok {
		return
	}
	durable, err1 := boolField(body, "durable", true)
	autoDelete, err2 := boolField(body, "auto_delete", false)
	args, err3 := tableField(body, "arguments")
	if err := cmp.Or(err1, err2, err3); err != nil {
		badRequest(w, err.Error())
		return
	}
	if name == "" {
		badRequest(w, "queue name is empty")
		return
	}
	if !s.may(w, r, v.Name(), core.KindQueue, name, core.Configure) {
		return
	}
	existed := v.Queue(name) != nil
	if _, err := v.DeclareQueue(core.QueueDecl{Name: name, Durable: durable, AutoDelete: autoDelete, Arguments: args}); err != nil {
		coreError(w, err)
		return
	}
	putDone(w, existed)
}

// deleteQueue deletes a queue; if-empty and if-unused as RabbitMQ.
func (s *Server) deleteQueue(w http.ResponseWriter, r *Request) {
	v, q, ok := s.lookupQueue(w, r)
	if !ok || !s.may(w, r, v.Name(), core.KindQueue, q.Name(), core.Configure) {
		return
	}
	qp := r.URL.Query()
	if _, err := v.DeleteQueue(q.Name(), qp.Get("if-unused") == "true", qp.Get("if-empty") == "true", 0); err != nil {
		coreError(w, err)
		return
	}
	noContent(w)
}

// purgeQueue is DELETE /api/queues/{vhost}/{name}/contents.
func (s *Server) purgeQueue(w http.ResponseWriter, r *Request) {
	v, q, ok := s.lookupQueue(w, r)
	if !ok || !s.may(w, r, v.Name(), core.KindQueue, q.Name(), core.Read) {
		return
	}
	if _, err := v.PurgeQueue(q.Name(), 0); err != nil {
		coreError(w, err)
		return
	}
	noContent(w)
}

// getMessages is POST /api/queues/{vhost}/{name}/get: count, ackmode
// (ack_requeue_true, ack_requeue_false, reject_requeue_true,
// reject_requeue_false), encoding (auto, base64), truncate.
func (s *Server) getMessages(w http.ResponseWriter, r *Request) {
	v, q, ok := s.lookupQueue(w, r)
	if !ok || !s.may(w, r, v.Name(), core.KindQueue, q.Name(), core.Read) {
		return
	}
	body, ok := decodeBody(w, r)
	if !ok {
		return
	}
	count, err := intField(body, "count", 1)
	if err != nil || count < 1 {
		badRequest(w, "count must be a positive integer")
		return
	}
	truncate, err := intField(body, "truncate", -1)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	var outcome core.Outcome
	switch mode := stringField(body, "ackmode"); mode {
	case "ack_requeue_true", "reject_requeue_true":
		outcome = core.Requeue
	case "ack_requeue_false":
		outcome = core.Ack
	case "reject_requeue_false":
		outcome = core.Reject
	default:
		badRequest(w, "Unknown ackmode: "+mode)
		return
	}
	enc := cmp.Or(stringField(body, "encoding"), "auto")
	if enc != "auto" && enc != "base64" {
		badRequest(w, "Unknown encoding: "+enc)
		return
	}
	if err := q.CheckAccess(0); err != nil {
		coreError(w, err)
		return
	}
	// Take them all first, then settle: requeued messages would otherwise
	// come back within the same request.
	var got []core.Delivery
	for range count {
		d, ok := q.Get(false)
		if !ok {
			break
		}
		got = append(got, d)
	}
	out := make([]map[string]any, 0, len(got))
	for i, d := range got {
		out = append(out, getJSON(d, len(got)-i-1+remaining(q), enc, truncate))
	}
	for _, d := range got {
		q.Settle(nil, []uint64{d.Seq}, outcome)
	}
	writeJSON(w, http.StatusOK, out)
}

func remaining(q *core.Queue) int {
	n, _ := q.Counts()
	return int(n)
}

// getJSON renders one got message as RabbitMQ does.
func getJSON(d core.Delivery, left int, enc string, truncate int64) map[string]any {
	m := d.Msg
	body := m.Body
	if truncate >= 0 && int64(len(body)) > truncate {
		body = body[:truncate]
	}
	payload, penc := string(body), "string"
	if enc == "base64" || !utf8.Valid(body) {
		payload, penc = base64.StdEncoding.EncodeToString(body), "base64"
	}
	return map[string]any{
		"payload_bytes":    len(m.Body),
		"redelivered":      d.Redelivered,
		"exchange":         m.Exchange,
		"routing_key":      m.RoutingKey,
		"message_count":    left,
		"properties":       propsJSON(&m.Properties),
		"payload":          payload,
		"payload_encoding": penc,
	}
}

// propsJSON renders AMQP properties with RabbitMQ's field names, only
// those present.
func propsJSON(p *core.Properties) map[string]any {
	m := map[string]any{}
	set := func(k, v string, flag uint16) {
		if v != "" || p.Flags&flag != 0 {
			m[k] = v
		}
	}
	set("content_type", p.ContentType, core.FlagContentType)
	set("content_encoding", p.ContentEncoding, core.FlagContentEncoding)
	if len(p.Headers) > 0 || p.Flags&core.FlagHeaders != 0 {
		h := jsonTable(p.Headers)
		if h == nil {
			h = map[string]any{}
		}
		m["headers"] = h
	}
	if p.DeliveryMode != 0 {
		m["delivery_mode"] = p.DeliveryMode
	}
	if p.Priority != 0 || p.Flags&core.FlagPriority != 0 {
		m["priority"] = p.Priority
	}
	set("correlation_id", p.CorrelationID, core.FlagCorrelationID)
	set("reply_to", p.ReplyTo, core.FlagReplyTo)
	set("expiration", p.Expiration, core.FlagExpiration)
	set("message_id", p.MessageID, core.FlagMessageID)
	if !p.Timestamp.IsZero() {
		m["timestamp"] = p.Timestamp.Unix()
	}
	set("type", p.Type, core.FlagType)
	set("user_id", p.UserID, core.FlagUserID)
	set("app_id", p.AppID, core.FlagAppID)
	set("cluster_id", p.ClusterID, core.FlagClusterID)
	return m
}

// queueBindings is GET /api/queues/{vhost}/{name}/bindings: the default
// exchange's implicit binding first, then the explicit ones.
func (s *Server) queueBindings(w http.ResponseWriter, r *Request) {
	v, q, ok := s.lookupQueue(w, r)
	if !ok {
		return
	}
	items := []map[string]any{defaultBinding(v.Name(), q.Name())}
	bs := v.QueueBindings(q.Name())
	slices.SortFunc(bs, func(a, b core.Binding) int {
		return cmp.Or(strings.Compare(a.Source, b.Source), strings.Compare(a.RoutingKey, b.RoutingKey))
	})
	for _, b := range bs {
		items = append(items, bindingJSON(v.Name(), b))
	}
	writeList(w, r, items)
}
