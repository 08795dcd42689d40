package mgmt

import (
	"net"
	"net/http"
	"net/netip"

	"github.com/ferrymq/ferrymq/core"
)

// Level is the tag a route asks of its user, RabbitMQ's management
// tags: each level includes those below it, except that policymaker and
// monitoring are side by side above management.
type Level uint8

// The levels, as RabbitMQ's management plugin names the tags.
const (
	// Management: any of the four tags. Such a user sees the objects of
	// the vhosts it has permissions in, and its own connections.
	Management Level = iota
	// Policymaker: policymaker or administrator.
	Policymaker
	// Monitoring: monitoring or administrator. Sees every connection,
	// channel and vhost (read-only beyond its own permissions).
	Monitoring
	// Administrator: everything, users and permissions included.
	Administrator
)

// refusal is RabbitMQ's reason text for a user below the level.
func (l Level) refusal() string {
	switch l {
	case Policymaker:
		return "Not policymaker user"
	case Monitoring:
		return "Not monitor user"
	case Administrator:
		return "Not administrator user"
	}
	return "Not management user"
}

// user is an authenticated API user.
type user struct{ *core.Principal }

func (u user) allowed(need Level) bool {
	p := u.Principal
	admin := p.HasTag(core.TagAdministrator)
	switch need {
	case Administrator:
		return admin
	case Monitoring:
		return admin || p.HasTag(core.TagMonitoring)
	case Policymaker:
		return admin || p.HasTag(core.TagPolicymaker)
	}
	return admin || p.HasTag(core.TagMonitoring) || p.HasTag(core.TagPolicymaker) || p.HasTag(core.TagManagement)
}

// authenticate checks the request's basic-auth credentials against the
// broker's users, with the loopback-only rule of AMQP logins (guest is
// refused from afar, as RabbitMQ's loopback_users). On failure it has
// written the 401.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (user, bool) {
	name, pass, ok := r.BasicAuth()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Basic realm="RabbitMQ Management"`)
		notAuthorised(w, "Not_Authorized")
		return user{}, false
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	loopback := false
	if ip, err := netip.ParseAddr(host); err == nil {
		loopback = ip.Unmap().IsLoopback()
	}
	p, err := s.opts.Auth.Login(r.Context(), core.LoginRequest{
		Username: name, Password: pass, Mechanism: "http", Peer: host, Loopback: loopback,
	})
	if err != nil {
		s.log.Warn("http: login failed", "user", name, "peer", r.RemoteAddr, "reason", err)
		// A script's request (the web console sends X-Requested-With) gets
		// no challenge: with one, the browser would answer a wrong password
		// with its own login prompt (and a headless one would never finish
		// the request). Other clients get RFC 7235's challenge.
		if r.Header.Get("X-Requested-With") == "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="RabbitMQ Management"`)
		}
		notAuthorised(w, "Login failed")
		return user{}, false
	}
	u := user{p}
	if !u.allowed(Management) {
		s.log.Warn("http: login refused", "user", name, "peer", r.RemoteAddr, "reason", "no management tag")
		notAuthorised(w, "Not management user")
		return user{}, false
	}
	return u, true
}

// seesAll reports whether the user sees every vhost's objects and every
// user's connections (monitoring, administrator), rather than only its
// own (management, policymaker).
func (r *Request) seesAll() bool {
	return user{r.User}.allowed(Monitoring)
}

// vhostAllowed reports whether the user may see vhost's objects: a
// monitoring or administrator user sees all, others the vhosts they have
// permissions in.
func (r *Request) vhostAllowed(vhost string) bool {
	if r.seesAll() {
		return true
	}
	ok, err := r.User.Authz.VHostAccess(r.Context(), r.User, vhost, "")
	return err == nil && ok
}
