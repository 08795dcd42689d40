package mgmt

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/ferrymq/ferrymq/core"
)

// vhostOf returns the request's {vhost}, answering 404 if it does not
// exist and 401 if the user may not see it.
func (s *Server) vhostOf(w http.ResponseWriter, r *Request) (*core.VHost, bool) {
	name := r.Var("vhost")
	v := s.opts.Broker.VHost(name)
	if v == nil {
		notFound(w)
		return nil, false
	}
	if !r.vhostAllowed(name) {
		notAuthorised(w, "User not authorised to access virtual host")
		return nil, false
	}
	return v, true
}

// may checks the user's permission on a resource, as a channel opened
// for it would: the user's own permissions, whatever its tags. On refusal
// it answers 401 with RabbitMQ's text.
func (s *Server) may(w http.ResponseWriter, r *Request, vhost, kind, name string, perm core.Permission) bool {
	checked := name
	if kind == core.KindExchange && name == "" {
		checked = core.DefaultExchangeName
	}
	ok, err := r.User.Authz.ResourceAccess(r.Context(), r.User, vhost, kind, checked, perm)
	if err == nil && ok {
		return true
	}
	reason := fmt.Sprintf("%s access to %s '%s' in vhost '%s' refused for user '%s'", perm, kind, checked, vhost, r.User.Name)
	if err != nil {
		reason += " (" + err.Error() + ")"
	}
	notAuthorised(w, reason)
	return false
}

// coreError answers a refusal from core as RabbitMQ's management plugin
// answers the channel error behind it: 404 for NOT_FOUND, 401 for
// ACCESS_REFUSED, 400 with the reply text for the rest.
func coreError(w http.ResponseWriter, err error) {
	var ce *core.Error
	if !errors.As(err, &ce) {
		writeError(w, http.StatusInternalServerError, "internal_server_error", err.Error())
		return
	}
	switch ce.Code {
	case core.CodeNotFound:
		notFound(w)
	case core.CodeAccessRefused:
		notAuthorised(w, ce.Error())
	default:
		badRequest(w, ce.Error())
	}
}

// exchangeName maps the API's name of the default exchange.
func exchangeName(n string) string {
	if n == core.DefaultExchangeName {
		return ""
	}
	return n
}
