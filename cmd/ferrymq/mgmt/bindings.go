package mgmt

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"strings"

	"github.com/ferrymq/ferrymq/core"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// propertiesKey names a binding among those between the same source and
// destination, as RabbitMQ's properties_key: the routing key ("~" when
// empty; "~" and "%" escaped), plus "~" and a hash of the arguments when
// there are any.
func propertiesKey(key string, args core.Table) string {
	q := strings.NewReplacer("%", "%25", "~", "%7E").Replace(key)
	if len(args) == 0 {
		if key == "" {
			return "~"
		}
		return q
	}
	j, _ := json.Marshal(jsonTable(args)) // map keys are sorted: a stable hash
	h := fnv.New64a()
	h.Write(j)
	return q + "~" + base64.RawURLEncoding.EncodeToString(h.Sum(nil))
}

// bindingJSON is a binding as RabbitMQ's /api/bindings shows it.
func bindingJSON(vhost string, b core.Binding) map[string]any {
	args := jsonTable(b.Arguments)
	if args == nil {
		args = map[string]any{}
	}
	dt := "queue"
	if b.ToExchange {
		dt = "exchange"
	}
	return map[string]any{
		"source":           b.Source,
		"vhost":            vhost,
		"destination":      b.Destination,
		"destination_type": dt,
		"routing_key":      b.RoutingKey,
		"arguments":        args,
		"properties_key":   propertiesKey(b.RoutingKey, b.Arguments),
	}
}

// defaultBinding is the default exchange's implicit binding of a queue,
// which RabbitMQ lists too.
func defaultBinding(vhost, queue string) map[string]any {
	return bindingJSON(vhost, core.Binding{Source: "", Destination: queue, RoutingKey: queue})
}

func (s *Server) bindingItems(r *Request, vhost string) []map[string]any {
	items := []map[string]any{}
	for _, vh := range s.opts.Broker.VHostNames() {
		if (vhost != "" && vh != vhost) || !r.vhostAllowed(vh) {
			continue
		}
		v := s.opts.Broker.VHost(vh)
		if v == nil {
			continue
		}
		for _, q := range v.QueueList() {
			items = append(items, defaultBinding(vh, q.Name()))
		}
		for _, b := range v.BindingList() {
			items = append(items, bindingJSON(vh, b))
		}
	}
	return items
}

func (s *Server) bindings(w http.ResponseWriter, r *Request) {
	writeList(w, r, s.bindingItems(r, ""))
}

func (s *Server) vhostBindings(w http.ResponseWriter, r *Request) {
	if _, ok := s.vhostOf(w, r); !ok {
		return
	}
	writeList(w, r, s.bindingItems(r, r.Var("vhost")))
}

// bindingPath reads {source} and {dest} of a /api/bindings/{vhost}/e/..
// route; toExchange says whether dest is an exchange (/e/) or a queue
// (/q/). It answers 404 if either does not exist.
func (s *Server) bindingPath(w http.ResponseWriter, r *Request, toExchange bool) (v *core.VHost, src, dst string, ok bool) {
	if v, ok = s.vhostOf(w, r); !ok {
		return nil, "", "", false
	}
	src, dst = exchangeName(r.Var("source")), r.Var("dest")
	if toExchange {
		dst = exchangeName(dst)
	}
	if !v.HasExchange(src) || (toExchange && !v.HasExchange(dst)) || (!toExchange && v.Queue(dst) == nil) {
		notFound(w)
		return nil, "", "", false
	}
	return v, src, dst, true
}

// between lists the bindings from src to dst.
func between(v *core.VHost, src, dst string, toExchange bool) []core.Binding {
	var out []core.Binding
	if src == "" && !toExchange {
		out = append(out, core.Binding{Source: "", Destination: dst, RoutingKey: dst})
	}
	for _, b := range v.BindingList() {
		if b.Source == src && b.Destination == dst && b.ToExchange == toExchange {
			out = append(out, b)
		}
	}
	return out
}

// listBetween is GET /api/bindings/{vhost}/e/{source}/q|e/{dest}.
func (s *Server) listBetween(toExchange bool) HandlerFunc {
	return func(w http.ResponseWriter, r *Request) {
		v, src, dst, ok := s.bindingPath(w, r, toExchange)
		if !ok {
			return
		}
		items := []map[string]any{}
		for _, b := range between(v, src, dst, toExchange) {
			items = append(items, bindingJSON(v.Name(), b))
		}
		writeList(w, r, items)
	}
}

// createBinding is POST /api/bindings/{vhost}/e/{source}/q|e/{dest}:
// routing_key and arguments; 201 with the new binding's path in Location.
func (s *Server) createBinding(toExchange bool) HandlerFunc {
	return func(w http.ResponseWriter, r *Request) {
		v, src, dst, ok := s.bindingPath(w, r, toExchange)
		if !ok {
			return
		}
		body, ok := decodeBody(w, r)
		if !ok {
			return
		}
		key := stringField(body, "routing_key")
		args, err := tableField(body, "arguments")
		if err != nil {
			badRequest(w, err.Error())
			return
		}
		dkind := core.KindQueue
		if toExchange {
			dkind = core.KindExchange
		}
		if !s.may(w, r, v.Name(), dkind, dst, core.Write) || !s.may(w, r, v.Name(), core.KindExchange, src, core.Read) {
			return
		}
		if src == "" {
			notAuthorised(w, "ACCESS_REFUSED - operation not permitted on the default exchange")
			return
		}
		if toExchange {
			err = v.BindExchange(dst, src, key, args)
		} else {
			err = v.BindQueue(dst, src, key, args, 0)
		}
		if err != nil {
			coreError(w, err)
			return
		}
		w.Header().Set("Location", url.PathEscape(propertiesKey(key, args)))
		w.WriteHeader(http.StatusCreated)
	}
}

// oneBinding finds the binding {props} between {source} and {dest}.
func (s *Server) oneBinding(w http.ResponseWriter, r *Request, toExchange bool) (*core.VHost, core.Binding, bool) {
	v, src, dst, ok := s.bindingPath(w, r, toExchange)
	if !ok {
		return nil, core.Binding{}, false
	}
	props := r.Var("props")
	for _, b := range between(v, src, dst, toExchange) {
		if propertiesKey(b.RoutingKey, b.Arguments) == props {
			return v, b, true
		}
	}
	notFound(w)
	return nil, core.Binding{}, false
}

func (s *Server) getBinding(toExchange bool) HandlerFunc {
	return func(w http.ResponseWriter, r *Request) {
		if v, b, ok := s.oneBinding(w, r, toExchange); ok {
			writeJSON(w, http.StatusOK, bindingJSON(v.Name(), b))
		}
	}
}

func (s *Server) deleteBinding(toExchange bool) HandlerFunc {
	return func(w http.ResponseWriter, r *Request) {
		v, b, ok := s.oneBinding(w, r, toExchange)
		if !ok {
			return
		}
		dkind := core.KindQueue
		if toExchange {
			dkind = core.KindExchange
		}
		if !s.may(w, r, v.Name(), dkind, b.Destination, core.Write) || !s.may(w, r, v.Name(), core.KindExchange, b.Source, core.Read) {
			return
		}
		if b.Source == "" {
			notAuthorised(w, "ACCESS_REFUSED - operation not permitted on the default exchange")
			return
		}
		var err error
		if toExchange {
			err = v.UnbindExchange(b.Destination, b.Source, b.RoutingKey, b.Arguments)
		} else {
			err = v.UnbindQueue(b.Destination, b.Source, b.RoutingKey, b.Arguments, 0)
		}
		if err != nil {
			coreError(w, err)
			return
		}
		noContent(w)
	}
}
