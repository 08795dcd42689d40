package mgmt

import (
	"net/http"

	"github.com/ferrymq/ferrymq/core"
)

// alarmed reports whether the alarm of resource is in effect.
func alarmed(b *core.Broker, resource string) bool {
	for _, a := range b.Alarms() {
		if a.Resource == resource {
			return true
		}
	}
	return false
}

// healthAlarms answers RabbitMQ's /api/health/checks/alarms (and
// local-alarms: this node is the cluster): 200 {"status":"ok"}, or 503
// with the alarms in effect.
func (s *Server) healthAlarms(w http.ResponseWriter, r *Request) {
	alarms := s.opts.Broker.Alarms()
	if len(alarms) == 0 {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok"})
		return
	}
	list := make([]map[string]any, len(alarms))
	for i, a := range alarms {
		list[i] = map[string]any{"node": s.node(), "resource": a.Resource, "reason": a.Reason}
	}
	writeJSON(w, http.StatusServiceUnavailable, map[string]any{
		"status": "failed", "reason": "resource alarm(s) in effect in the cluster", "alarms": list,
	})
}
