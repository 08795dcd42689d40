package mgmt

// ferrymq's own endpoints beside RabbitMQ's: definitions (RabbitMQ's
// format, definitions.go), MQTT sessions and retained messages, bridges.

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ferrymq/ferrymq/bridge"
	"github.com/ferrymq/ferrymq/mqtt"
)

// objectRoutes are the routes of this file; routes calls it.
func (s *Server) objectRoutes() {
	s.Route("GET", "/api/definitions", Administrator, s.getDefinitions)
	s.Route("POST", "/api/definitions", Administrator, s.postDefinitions)
	s.Route("GET", "/api/definitions/{vhost}", Administrator, s.getVHostDefinitions)
	s.Route("POST", "/api/definitions/{vhost}", Administrator, s.postVHostDefinitions)

	s.Route("GET", "/api/vhost-limits", Monitoring, s.vhostLimits)
	s.Route("GET", "/api/vhost-limits/{vhost}", Monitoring, s.vhostLimits)
	s.Route("PUT", "/api/vhost-limits/{vhost}/{name}", Administrator, s.putVHostLimit)
	s.Route("DELETE", "/api/vhost-limits/{vhost}/{name}", Administrator, s.putVHostLimit)

	s.Route("GET", "/api/mqtt/sessions", Management, s.mqttSessions)
	s.Route("GET", "/api/mqtt/sessions/{vhost}", Management, s.mqttSessions)
	s.Route("GET", "/api/mqtt/sessions/{vhost}/{client}", Management, s.mqttSession)
	s.Route("DELETE", "/api/mqtt/sessions/{vhost}/{client}", Management, s.deleteMQTTSession)
	s.Route("GET", "/api/mqtt/retained", Management, s.mqttRetained)
	s.Route("GET", "/api/mqtt/retained/{vhost}", Management, s.mqttRetained)
	s.Route("DELETE", "/api/mqtt/retained/{vhost}", Administrator, s.clearMQTTRetained)

	s.Route("GET", "/api/bridges", Monitoring, s.bridges)
	s.Route("GET", "/api/bridges/{name}", Monitoring, s.bridgeOne)
	s.Route("POST", "/api/bridges/{name}/pause", Administrator, s.pauseBridge(true))
	s.Route("POST", "/api/bridges/{name}/resume", Administrator, s.pauseBridge(false))
}

func (s *Server) definitionsSource() DefinitionsSource {
	return DefinitionsSource{Broker: s.opts.Broker, Users: s.opts.Users, Version: s.opts.Version}
}

func (s *Server) getDefinitions(w http.ResponseWriter, r *Request) {
	defsDownload(w, r)
	writeJSON(w, http.StatusOK, s.definitionsSource().Export())
}

func (s *Server) getVHostDefinitions(w http.ResponseWriter, r *Request) {
	d, ok := s.definitionsSource().ExportVHost(r.Var("vhost"))
	if !ok {
		notFound(w)
		return
	}
	defsDownload(w, r)
	writeJSON(w, http.StatusOK, d)
}

// defsDownload asks a browser to save the export, as RabbitMQ does for
// ?download=<file name>.
func defsDownload(w http.ResponseWriter, r *Request) {
	if name := r.URL.Query().Get("download"); name != "" {
		w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": name}))
	}
}

// definitionsBody returns the uploaded document: the body itself
// (rabbitmqadmin, curl), or the "file" field of a form (RabbitMQ's web
// UI). On error it has answered 400.
func definitionsBody(w http.ResponseWriter, r *Request) (io.Reader, bool) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "multipart/form-data" {
		// The form's parts spill to temporary files beyond 32 MiB: bound
		// the whole upload, not only the part read back.
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		f, _, err := r.FormFile("file")
		if err != nil {
			badRequest(w, "definitions upload: no file field: "+err.Error())
			return nil, false
		}
		return io.LimitReader(f, maxBody), true
	}
	raw, ok := readBody(w, r)
	if !ok {
		return nil, false
	}
	return bytes.NewReader(raw), true
}

func (s *Server) postDefinitions(w http.ResponseWriter, r *Request) {
	body, ok := definitionsBody(w, r)
	if !ok {
		return
	}
	d, err := ParseDefinitions(body)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	res, err := s.definitionsSource().Import(d)
	s.importAnswer(w, r, res, err)
}

func (s *Server) postVHostDefinitions(w http.ResponseWriter, r *Request) {
	if s.opts.Broker.VHost(r.Var("vhost")) == nil {
		notFound(w)
		return
	}
	body, ok := definitionsBody(w, r)
	if !ok {
		return
	}
	d, err := ParseVHostDefinitions(body)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	res, err := s.definitionsSource().ImportVHost(r.Var("vhost"), d)
	s.importAnswer(w, r, res, err)
}

// importAnswer logs what an import did not apply and answers: 400 with
// the invalid definitions, 200 with the warnings, or 204 (RabbitMQ's
// answer) when everything was applied as given.
func (s *Server) importAnswer(w http.ResponseWriter, r *Request, res ImportResult, err error) {
	for _, msg := range res.Warnings {
		s.log.Warn("definitions import: "+msg, "user", r.User.Name)
	}
	if err != nil {
		s.log.Warn("definitions import: invalid definitions", "user", r.User.Name, "err", err)
		badRequest(w, strings.ReplaceAll(err.Error(), "\n", "; "))
		return
	}
	s.log.Info("definitions imported", "user", r.User.Name, "warnings", len(res.Warnings))
	if len(res.Warnings) == 0 {
		noContent(w)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// vhostLimits lists the vhosts that have limits, as RabbitMQ's GET
// /api/vhost-limits[/{vhost}]: [{"vhost": "v", "value": {"max-connections": n}}].
func (s *Server) vhostLimits(w http.ResponseWriter, r *Request) {
	names := s.opts.Broker.VHostNames()
	if vh := r.Var("vhost"); vh != "" {
		if s.opts.Broker.VHost(vh) == nil {
			notFound(w)
			return
		}
		names = []string{vh}
	}
	out := []map[string]any{}
	for _, name := range names {
		v := s.opts.Broker.VHost(name)
		if v == nil {
			continue
		}
		l := v.Limits()
		val := map[string]any{}
		if l.MaxConnections > 0 {
			val["max-connections"] = l.MaxConnections
		}
		if l.MaxQueues > 0 {
			val["max-queues"] = l.MaxQueues
		}
		if len(val) > 0 {
			out = append(out, map[string]any{"vhost": name, "value": val})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// putVHostLimit sets (PUT {"value": n}) or clears (DELETE) one vhost
// limit, max-connections or max-queues, as rabbitmqadmin declare
// vhost_limit does; a negative value clears it, as in RabbitMQ.
func (s *Server) putVHostLimit(w http.ResponseWriter, r *Request) {
	v := s.opts.Broker.VHost(r.Var("vhost"))
	if v == nil {
		notFound(w)
		return
	}
	var n int64 = -1
	if r.Method == http.MethodPut {
		body, ok := decodeBody(w, r)
		if !ok {
			return
		}
		var err error
		if n, err = intField(body, "value", 0); err != nil {
			badRequest(w, "value: "+err.Error())
			return
		}
	}
	l := v.Limits()
	switch r.Var("name") {
	case "max-connections":
		l.MaxConnections = int(max(n, 0))
	case "max-queues":
		l.MaxQueues = int(max(n, 0))
	default:
		badRequest(w, "unknown vhost limit "+strconv.Quote(r.Var("name"))+" (ferrymq has max-connections and max-queues)")
		return
	}
	v.SetLimits(l)
	noContent(w)
}

// jsonTime is a time for JSON, RFC 3339 in UTC, or null when zero.
func jsonTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func sessionJSON(info mqtt.SessionInfo) map[string]any {
	subs := make([]map[string]any, 0, len(info.Subscriptions))
	for _, sub := range info.Subscriptions {
		m := map[string]any{"filter": sub.Filter, "qos": sub.QoS, "no_local": sub.NoLocal, "retain_as_published": sub.RetainAsPublished}
		if sub.ID != 0 {
			m["subscription_identifier"] = sub.ID
		}
		subs = append(subs, m)
	}
	return map[string]any{
		"name": info.ClientID, "client_id": info.ClientID, "vhost": info.VHost, "user": info.User,
		"connected": info.Connected, "protocol": info.Protocol, "persistent": info.Persistent,
		"expires_at": jsonTime(info.ExpiresAt), "peer": info.Peer, "subscriptions": subs,
		"queued": info.Queued, "inflight": info.Inflight, "dropped": info.Dropped, "last_seen": jsonTime(info.LastSeen),
	}
}

// sessionVisible reports whether the user may see a session: in a vhost
// it may see, and (unless it sees everything) its own.
func (r *Request) sessionVisible(info mqtt.SessionInfo) bool {
	if !r.vhostAllowed(info.VHost) {
		return false
	}
	return r.seesAll() || info.User == r.User.Name
}

func (s *Server) mqttSessions(w http.ResponseWriter, r *Request) {
	if s.opts.MQTT == nil {
		notFound(w)
		return
	}
	vhost := r.Var("vhost")
	if vhost != "" && s.opts.Broker.VHost(vhost) == nil {
		notFound(w)
		return
	}
	var items []map[string]any
	for _, info := range s.opts.MQTT.Sessions(vhost) {
		if r.sessionVisible(info) {
			items = append(items, sessionJSON(info))
		}
	}
	writeList(w, r, items)
}

func (s *Server) findSession(r *Request) (mqtt.SessionInfo, bool) {
	if s.opts.MQTT == nil {
		return mqtt.SessionInfo{}, false
	}
	for _, info := range s.opts.MQTT.Sessions(r.Var("vhost")) {
		if info.ClientID == r.Var("client") && r.sessionVisible(info) {
			return info, true
		}
	}
	return mqtt.SessionInfo{}, false
}

func (s *Server) mqttSession(w http.ResponseWriter, r *Request) {
	info, ok := s.findSession(r)
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, sessionJSON(info))
}

// deleteMQTTSession removes a session (DISCONNECT 0x98 to its connection,
// its queues deleted). A user may remove its own sessions, an
// administrator any, as RabbitMQ lets users close connections.
func (s *Server) deleteMQTTSession(w http.ResponseWriter, r *Request) {
	info, ok := s.findSession(r)
	if !ok {
		notFound(w)
		return
	}
	if info.User != r.User.Name && !(user{r.User}).allowed(Administrator) {
		notAuthorised(w, "only an administrator may remove another user's session")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	if err := s.opts.MQTT.RemoveSession(ctx, info.VHost, info.ClientID); err != nil {
		if errors.Is(err, mqtt.ErrNoSession) {
			notFound(w)
			return
		}
		writeError(w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	s.log.Info("mqtt session removed", "client", info.ClientID, "vhost", info.VHost, "by", r.User.Name)
	noContent(w)
}

// retainedTruncate is how many payload bytes a listing shows by default
// (?truncate=N changes it, as RabbitMQ's get does).
const retainedTruncate = 4096

func (s *Server) mqttRetained(w http.ResponseWriter, r *Request) {
	if s.opts.MQTT == nil {
		notFound(w)
		return
	}
	vhost := r.Var("vhost")
	if vhost == "" {
		vhost = r.URL.Query().Get("vhost")
	}
	if vhost != "" && s.opts.Broker.VHost(vhost) == nil {
		notFound(w)
		return
	}
	truncate := retainedTruncate
	if t := r.URL.Query().Get("truncate"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			badRequest(w, "truncate: want a number of bytes")
			return
		}
		truncate = n
	}
	list, err := s.opts.MQTT.Retained(vhost, r.URL.Query().Get("filter"))
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	var items []map[string]any
	for _, m := range list {
		if !r.vhostAllowed(m.VHost) {
			continue
		}
		payload := m.Payload
		if len(payload) > truncate {
			payload = payload[:truncate]
		}
		text, enc := string(payload), "string"
		if !utf8.Valid(payload) {
			text, enc = base64.StdEncoding.EncodeToString(payload), "base64"
		}
		items = append(items, map[string]any{
			"name": m.Topic, "topic": m.Topic, "vhost": m.VHost, "qos": m.QoS, "payload_bytes": m.Size,
			"payload": text, "payload_encoding": enc, "payload_truncated": len(payload) < m.Size,
			"content_type": m.ContentType, "published": jsonTime(m.Published),
		})
	}
	writeList(w, r, items)
}

// clearMQTTRetained deletes the retained messages matching ?filter=
// (required; "#" for all) in a vhost.
func (s *Server) clearMQTTRetained(w http.ResponseWriter, r *Request) {
	if s.opts.MQTT == nil || s.opts.Broker.VHost(r.Var("vhost")) == nil {
		notFound(w)
		return
	}
	filter := r.URL.Query().Get("filter")
	if filter == "" {
		badRequest(w, "filter: required (an MQTT topic filter; # clears every retained message of the vhost)")
		return
	}
	n, err := s.opts.MQTT.ClearRetained(r.Var("vhost"), filter)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	s.log.Info("mqtt retained messages cleared", "vhost", r.Var("vhost"), "filter", filter, "cleared", n, "by", r.User.Name)
	writeJSON(w, http.StatusOK, map[string]any{"cleared": n})
}

func bridgeJSON(st bridge.Status) map[string]any {
	return map[string]any{
		"name": st.Name, "upstream": st.Upstream, "connected": st.Connected, "paused": st.Paused, "state": st.State(),
		"last_error": st.LastError, "last_error_at": jsonTime(st.LastErrorAt), "connected_at": jsonTime(st.ConnectedAt),
		"backlog_messages": st.Backlog, "backlog_bytes": st.BacklogBytes,
		"forwarded": st.Forwarded, "received": st.Received, "dropped": st.Dropped, "loops_cut": st.LoopsCut, "refused": st.Refused,
		"rate_in": st.RateIn, "rate_out": st.RateOut,
	}
}

func (s *Server) bridges(w http.ResponseWriter, r *Request) {
	items := []map[string]any{}
	for _, st := range s.opts.Bridges.Status() {
		items = append(items, bridgeJSON(st))
	}
	writeList(w, r, items)
}

func (s *Server) bridgeOne(w http.ResponseWriter, r *Request) {
	for _, st := range s.opts.Bridges.Status() {
		if st.Name == r.Var("name") {
			writeJSON(w, http.StatusOK, bridgeJSON(st))
			return
		}
	}
	notFound(w)
}

func (s *Server) pauseBridge(pause bool) HandlerFunc {
	return func(w http.ResponseWriter, r *Request) {
		do := s.opts.Bridges.Resume
		if pause {
			do = s.opts.Bridges.Pause
		}
		if err := do(r.Var("name")); err != nil {
			if errors.Is(err, bridge.ErrNoLink) {
				notFound(w)
				return
			}
			writeError(w, http.StatusInternalServerError, "internal_server_error", err.Error())
			return
		}
		s.log.Info("bridge "+map[bool]string{true: "paused", false: "resumed"}[pause]+" by an operator", "bridge", r.Var("name"), "by", r.User.Name)
		noContent(w)
	}
}
