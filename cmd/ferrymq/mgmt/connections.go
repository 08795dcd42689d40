package mgmt

import (
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferrymq/ferrymq/core"
)

// seesConn reports whether the user may see connection c: monitoring
// and administrator users see all, others their own, as in RabbitMQ.
func (r *Request) seesConn(c core.Connection) bool {
	return r.seesAll() || c.User == r.User.Name
}

// hostPort splits a host:port for the JSON's host and port fields.
func hostPort(addr string) (string, int) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr, 0
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

func authMechanism(c core.Connection) string {
	if strings.HasPrefix(c.Protocol, "MQTT") {
		return "none"
	}
	return "PLAIN"
}

// chanCount is a connection's channels as RabbitMQ counts them: an MQTT
// connection has one, which holds its subscriptions' consumers.
func chanCount(c core.Connection) int {
	if strings.HasPrefix(c.Protocol, "MQTT") {
		return 1
	}
	return c.Channels
}

// connJSON is a connection as RabbitMQ's /api/connections shows it.
func (s *Server) connJSON(c core.Connection) map[string]any {
	host, port := hostPort(c.Local)
	peerHost, peerPort := hostPort(c.Peer)
	props := jsonTable(c.ClientProperties)
	if props == nil {
		props = map[string]any{}
	}
	return map[string]any{
		"name":                      c.Name,
		"node":                      s.node(),
		"type":                      "network",
		"vhost":                     c.VHost,
		"user":                      c.User,
		"user_who_performed_action": c.User,
		"protocol":                  c.Protocol,
		"host":                      host,
		"port":                      port,
		"peer_host":                 peerHost,
		"peer_port":                 peerPort,
		"ssl":                       c.TLS,
		"auth_mechanism":            authMechanism(c),
		"connected_at":              c.ConnectedAt.UnixMilli(),
		"channels":                  chanCount(c),
		"client_properties":         props,
		"state":                     "running",
	}
}

func (s *Server) visibleConns(r *Request, vhost string) []core.Connection {
	var out []core.Connection
	for _, c := range s.opts.Broker.Connections() {
		if r.seesConn(c) && (vhost == "" || c.VHost == vhost) {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (s *Server) connections(w http.ResponseWriter, r *Request) {
	s.listConns(w, r, "")
}

func (s *Server) vhostConnections(w http.ResponseWriter, r *Request) {
	vh := r.Var("vhost")
	if s.opts.Broker.VHost(vh) == nil {
		notFound(w)
		return
	}
	if !r.vhostAllowed(vh) {
		notAuthorised(w, "User not authorised to access virtual host")
		return
	}
	s.listConns(w, r, vh)
}

func (s *Server) listConns(w http.ResponseWriter, r *Request, vhost string) {
	// 100,000 idle MQTT devices: page before rendering.
	writeListOf(w, r, s.visibleConns(r, vhost), func(c core.Connection) string { return c.Name }, s.connJSON)
}

// lookupConn finds the named connection the user may see.
func (s *Server) lookupConn(w http.ResponseWriter, r *Request) (core.Connection, bool) {
	c, ok := s.opts.Broker.Connection(r.Var("name"))
	if !ok || !r.seesConn(c) {
		notFound(w)
		return core.Connection{}, false
	}
	return c, true
}

func (s *Server) connection(w http.ResponseWriter, r *Request) {
	if c, ok := s.lookupConn(w, r); ok {
		writeJSON(w, http.StatusOK, s.connJSON(c))
	}
}

// closeConnection closes a connection with the X-Reason header's text
// (AMQP: connection.close 320 CONNECTION_FORCED), as RabbitMQ. A
// management user may close its own connections, an administrator any.
func (s *Server) closeConnection(w http.ResponseWriter, r *Request) {
	c, ok := s.opts.Broker.Connection(r.Var("name"))
	if !ok || !r.seesConn(c) {
		notFound(w)
		return
	}
	if c.User != r.User.Name && !r.User.HasTag(core.TagAdministrator) {
		notAuthorised(w, "Not administrator user")
		return
	}
	reason := r.Header.Get("X-Reason")
	if reason == "" {
		reason = "Closed via management plugin"
	}
	s.log.Info("http: closing connection", "connection", c.Name, "by", r.User.Name, "reason", reason)
	s.opts.Broker.CloseConnection(c.Name, reason)
	noContent(w)
}

// chanJSON is a channel as RabbitMQ's /api/channels shows it.
func (s *Server) chanJSON(c core.Connection, ch core.ChannelInfo) map[string]any {
	peerHost, peerPort := hostPort(c.Peer)
	return map[string]any{
		"name":   chanName(c.Name, ch.Number),
		"node":   s.node(),
		"number": ch.Number,
		"connection_details": map[string]any{
			"name": c.Name, "peer_host": peerHost, "peer_port": peerPort,
		},
		"vhost":                     c.VHost,
		"user":                      c.User,
		"user_who_performed_action": c.User,
		"consumer_count":            ch.Consumers,
		"messages_unacknowledged":   ch.Unacked,
		"messages_unconfirmed":      0,
		"messages_uncommitted":      0,
		"acks_uncommitted":          0,
		"prefetch_count":            ch.PrefetchCount,
		"global_prefetch_count":     ch.GlobalPrefetch,
		"confirm":                   ch.Confirm,
		"transactional":             ch.Transactional,
		"state":                     "running",
	}
}

// chanName is RabbitMQ's channel name: "<connection name> (<number>)".
func chanName(conn string, n uint16) string { return conn + " (" + strconv.Itoa(int(n)) + ")" }

func (s *Server) listChannels(r *Request, vhost, conn string) []map[string]any {
	items := []map[string]any{}
	for _, c := range s.visibleConns(r, vhost) {
		if conn != "" && c.Name != conn {
			continue
		}
		for _, ch := range s.opts.Broker.ListChannels(c.Name) {
			items = append(items, s.chanJSON(c, ch))
		}
	}
	return items
}

func (s *Server) channels(w http.ResponseWriter, r *Request) {
	writeList(w, r, s.listChannels(r, "", ""))
}

func (s *Server) vhostChannels(w http.ResponseWriter, r *Request) {
	vh := r.Var("vhost")
	if s.opts.Broker.VHost(vh) == nil {
		notFound(w)
		return
	}
	writeList(w, r, s.listChannels(r, vh, ""))
}

func (s *Server) connectionChannels(w http.ResponseWriter, r *Request) {
	c, ok := s.lookupConn(w, r)
	if !ok {
		return
	}
	writeList(w, r, s.listChannels(r, "", c.Name))
}

func (s *Server) channel(w http.ResponseWriter, r *Request) {
	name := r.Var("name")
	// "<connection> (<n>)": the connection's name may itself hold spaces.
	i := strings.LastIndex(name, " (")
	if i < 0 || !strings.HasSuffix(name, ")") {
		notFound(w)
		return
	}
	n, err := strconv.Atoi(name[i+2 : len(name)-1])
	if err != nil {
		notFound(w)
		return
	}
	c, ok := s.opts.Broker.Connection(name[:i])
	if !ok || !r.seesConn(c) {
		notFound(w)
		return
	}
	for _, ch := range s.opts.Broker.ListChannels(c.Name) {
		if int(ch.Number) == n {
			writeJSON(w, http.StatusOK, s.chanJSON(c, ch))
			return
		}
	}
	notFound(w)
}

func (s *Server) listConsumers(r *Request, vhost string) []map[string]any {
	items := []map[string]any{}
	for _, c := range s.visibleConns(r, vhost) {
		peerHost, peerPort := hostPort(c.Peer)
		for _, ch := range s.opts.Broker.ListChannels(c.Name) {
			for _, k := range ch.ConsumerList {
				args := jsonTable(k.Arguments)
				if args == nil {
					args = map[string]any{}
				}
				items = append(items, map[string]any{
					"consumer_tag": k.Tag,
					"queue":        map[string]any{"name": k.Queue, "vhost": c.VHost},
					"channel_details": map[string]any{
						"name": chanName(c.Name, ch.Number), "number": ch.Number, "connection_name": c.Name,
						"peer_host": peerHost, "peer_port": peerPort, "user": c.User, "node": s.node(),
					},
					"ack_required":    k.AckRequired,
					"prefetch_count":  k.Prefetch,
					"exclusive":       k.Exclusive,
					"arguments":       args,
					"active":          true,
					"activity_status": "up",
				})
			}
		}
	}
	return items
}

func (s *Server) consumers(w http.ResponseWriter, r *Request) {
	writeList(w, r, s.listConsumers(r, ""))
}

func (s *Server) vhostConsumers(w http.ResponseWriter, r *Request) {
	vh := r.Var("vhost")
	if s.opts.Broker.VHost(vh) == nil {
		notFound(w)
		return
	}
	writeList(w, r, s.listConsumers(r, vh))
}

// jsonTable turns an AMQP field table into JSON-friendly values, as
// RabbitMQ renders them: long strings as text, timestamps as seconds.
func jsonTable(t core.Table) map[string]any {
	if t == nil {
		return nil
	}
	out := make(map[string]any, len(t))
	for k, v := range t {
		out[k] = jsonValue(v)
	}
	return out
}

func jsonValue(v any) any {
	switch x := v.(type) {
	case core.Table:
		return jsonTable(x)
	case map[string]any:
		return jsonTable(x)
	case []byte:
		return string(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonValue(e)
		}
		return out
	case time.Time:
		return x.Unix()
	case core.Decimal:
		f := float64(x.Value)
		for range x.Scale {
			f /= 10
		}
		return f
	}
	return v
}
