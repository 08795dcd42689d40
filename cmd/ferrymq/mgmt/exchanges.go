package mgmt

import (
	"cmp"
	"encoding/base64"
	"net/http"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// exchangeJSON is an exchange as RabbitMQ's /api/exchanges shows it.
func exchangeJSON(vhost string, x core.ExchangeSnapshot) map[string]any {
	args := jsonTable(x.Arguments)
	if args == nil {
		args = map[string]any{}
	}
	return map[string]any{
		"name":                      x.Name,
		"vhost":                     vhost,
		"type":                      x.Kind,
		"durable":                   x.Durable,
		"auto_delete":               x.AutoDelete,
		"internal":                  x.Internal,
		"arguments":                 args,
		"user_who_performed_action": "rmq-internal",
		"policy":                    nil,
	}
}

type vhostExchange struct {
	vhost string
	x     core.ExchangeSnapshot
}

func (s *Server) exchangeItems(r *Request, vhost string) []vhostExchange {
	var out []vhostExchange
	for _, vh := range s.opts.Broker.VHostNames() {
		if (vhost != "" && vh != vhost) || !r.vhostAllowed(vh) {
			continue
		}
		if v := s.opts.Broker.VHost(vh); v != nil {
			for _, x := range v.ExchangeList() {
				out = append(out, vhostExchange{vh, x})
			}
		}
	}
	return out
}

func (s *Server) writeExchanges(w http.ResponseWriter, r *Request, xs []vhostExchange) {
	writeListOf(w, r, xs, func(x vhostExchange) string { return x.x.Name },
		func(x vhostExchange) map[string]any { return exchangeJSON(x.vhost, x.x) })
}

func (s *Server) exchanges(w http.ResponseWriter, r *Request) {
	s.writeExchanges(w, r, s.exchangeItems(r, ""))
}

func (s *Server) vhostExchanges(w http.ResponseWriter, r *Request) {
	if _, ok := s.vhostOf(w, r); !ok {
		return
	}
	s.writeExchanges(w, r, s.exchangeItems(r, r.Var("vhost")))
}

// lookupExchange returns the request's {vhost}/{name} exchange
// ("amq.default" is the default one), or answers 404.
func (s *Server) lookupExchange(w http.ResponseWriter, r *Request) (*core.VHost, core.ExchangeSnapshot, bool) {
	v, ok := s.vhostOf(w, r)
	if !ok {
		return nil, core.ExchangeSnapshot{}, false
	}
	x, ok := v.Exchange(exchangeName(r.Var("name")))
	if !ok {
		notFound(w)
		return nil, x, false
	}
	return v, x, true
}

func (s *Server) exchange(w http.ResponseWriter, r *Request) {
	if v, x, ok := s.lookupExchange(w, r); ok {
		writeJSON(w, http.StatusOK, exchangeJSON(v.Name(), x))
	}
}

// putExchange declares an exchange: 201 when created, 204 when it
// existed with the same properties, 400 when they differ.
func (s *Server) putExchange(w http.ResponseWriter, r *Request) {
	v, ok := s.vhostOf(w, r)
	if !ok {
		return
	}
	name := exchangeName(r.Var("name"))
	body, ok := decodeBody(w, r)
	if !ok {
		return
	}
	kind := stringField(body, "type")
	durable, err1 := boolField(body, "durable", true)
	autoDelete, err2 := boolField(body, "auto_delete", false)
	internal, err3 := boolField(body, "internal", false)
	args, err4 := tableField(body, "arguments")
	if err := cmp.Or(err1, err2, err3, err4); err != nil {
		badRequest(w, err.Error())
		return
	}
	if kind == "" {
		badRequest(w, "[{key_missing,type}]")
		return
	}
	if name == "" {
		notAuthorised(w, "ACCESS_REFUSED - operation not permitted on the default exchange")
		return
	}
	if !s.may(w, r, v.Name(), core.KindExchange, name, core.Configure) {
		return
	}
	existed := v.HasExchange(name)
	err := v.DeclareExchange(core.ExchangeDecl{Name: name, Kind: kind, Durable: durable, AutoDelete: autoDelete, Internal: internal, Arguments: args})
	if err != nil {
		coreError(w, err)
		return
	}
	putDone(w, existed)
}

func (s *Server) deleteExchange(w http.ResponseWriter, r *Request) {
	v, x, ok := s.lookupExchange(w, r)
	if !ok || !s.may(w, r, v.Name(), core.KindExchange, x.Name, core.Configure) {
		return
	}
	if err := v.DeleteExchange(x.Name, r.URL.Query().Get("if-unused") == "true"); err != nil {
		coreError(w, err)
		return
	}
	noContent(w)
}

// publish is POST /api/exchanges/{vhost}/{name}/publish: routing_key,
// payload, payload_encoding (string, base64) and properties; the answer
// says whether the message reached a queue.
func (s *Server) publish(w http.ResponseWriter, r *Request) {
	v, x, ok := s.lookupExchange(w, r)
	if !ok || !s.may(w, r, v.Name(), core.KindExchange, x.Name, core.Write) {
		return
	}
	body, ok := decodeBody(w, r)
	if !ok {
		return
	}
	if _, ok := body["routing_key"]; !ok {
		badRequest(w, "[{key_missing,routing_key}]")
		return
	}
	if _, ok := body["payload"]; !ok {
		badRequest(w, "[{key_missing,payload}]")
		return
	}
	payload := []byte(stringField(body, "payload"))
	switch enc := cmp.Or(stringField(body, "payload_encoding"), "string"); enc {
	case "string":
	case "base64":
		b, err := base64.StdEncoding.DecodeString(string(payload))
		if err != nil {
			badRequest(w, "payload is not base64: "+err.Error())
			return
		}
		payload = b
	default:
		badRequest(w, "unknown payload_encoding "+enc)
		return
	}
	props, err := propsFromJSON(body["properties"])
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	if props.UserID != "" && props.UserID != r.User.Name {
		badRequest(w, "user_id property set to '"+props.UserID+"' but authenticated user was '"+r.User.Name+"'")
		return
	}
	if blocked, _ := s.opts.Broker.Blocked(); blocked != nil {
		writeError(w, http.StatusServiceUnavailable, "resource_alarm", "publishing is blocked by a resource alarm")
		return
	}
	msg := &core.Message{Exchange: x.Name, RoutingKey: stringField(body, "routing_key"), Properties: props, Body: payload}
	res, err := v.Publish(msg)
	if err != nil {
		coreError(w, err)
		return
	}
	if err := s.opts.Broker.WaitSynced(res.Pos); err != nil {
		writeError(w, http.StatusInternalServerError, "internal_server_error", "message not stored: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"routed": res.Routed > 0})
}

// propsFromJSON reads a publish's properties object.
func propsFromJSON(v any) (core.Properties, error) {
	var p core.Properties
	m, _ := v.(map[string]any)
	if m == nil {
		return p, nil
	}
	str := func(k string, dst *string, flag uint16) {
		if _, ok := m[k]; ok {
			*dst = stringField(m, k)
			p.Flags |= flag
		}
	}
	str("content_type", &p.ContentType, core.FlagContentType)
	str("content_encoding", &p.ContentEncoding, core.FlagContentEncoding)
	str("correlation_id", &p.CorrelationID, core.FlagCorrelationID)
	str("reply_to", &p.ReplyTo, core.FlagReplyTo)
	str("expiration", &p.Expiration, core.FlagExpiration)
	str("message_id", &p.MessageID, core.FlagMessageID)
	str("type", &p.Type, core.FlagType)
	str("user_id", &p.UserID, core.FlagUserID)
	str("app_id", &p.AppID, core.FlagAppID)
	str("cluster_id", &p.ClusterID, core.FlagClusterID)
	if h, err := tableField(m, "headers"); err != nil {
		return p, err
	} else if h != nil {
		p.Headers = h
		p.Flags |= core.FlagHeaders
	}
	if _, ok := m["delivery_mode"]; ok {
		n, err := intField(m, "delivery_mode", 0)
		if err != nil || n < 1 || n > 2 {
			return p, errorf("delivery_mode must be 1 or 2")
		}
		p.DeliveryMode = uint8(n)
		p.Flags |= core.FlagDeliveryMode
	}
	if _, ok := m["priority"]; ok {
		n, err := intField(m, "priority", 0)
		if err != nil || n < 0 || n > 255 {
			return p, errorf("priority must be 0..255")
		}
		p.Priority = uint8(n)
		p.Flags |= core.FlagPriority
	}
	if _, ok := m["timestamp"]; ok {
		n, err := intField(m, "timestamp", 0)
		if err != nil {
			return p, err
		}
		p.Timestamp = time.Unix(n, 0)
		p.Flags |= core.FlagTimestamp
	}
	return p, nil
}

// exchangeBindings is GET /api/exchanges/{vhost}/{name}/bindings/source
// (dir "source") or .../destination.
func (s *Server) exchangeBindings(dir string) HandlerFunc {
	return func(w http.ResponseWriter, r *Request) {
		v, x, ok := s.lookupExchange(w, r)
		if !ok {
			return
		}
		items := []map[string]any{}
		if dir == "source" && x.Name == "" {
			for _, q := range v.QueueList() {
				items = append(items, defaultBinding(v.Name(), q.Name()))
			}
		}
		for _, b := range v.BindingList() {
			if (dir == "source" && b.Source == x.Name) || (dir == "destination" && b.ToExchange && b.Destination == x.Name) {
				items = append(items, bindingJSON(v.Name(), b))
			}
		}
		writeList(w, r, items)
	}
}
