package mgmt

import (
	"net/http"
	"slices"
	"strings"

	"github.com/ferrymq/ferrymq/core"
)

// usersOr404 returns the user database, answering 404 without one.
func (s *Server) usersOr404(w http.ResponseWriter) (*core.Users, bool) {
	if s.opts.Users == nil {
		notFound(w)
		return nil, false
	}
	return s.opts.Users, true
}

func tagList(tags []string) []string {
	if tags == nil {
		return []string{}
	}
	return tags
}

// userJSON is a user as RabbitMQ's /api/users shows it.
func userJSON(u core.UserSpec) map[string]any {
	limits := map[string]any{}
	if u.MaxConnections > 0 {
		limits["max-connections"] = u.MaxConnections
	}
	if u.MaxChannels > 0 {
		limits["max-channels"] = u.MaxChannels
	}
	return map[string]any{
		"name":              u.Name,
		"password_hash":     u.PasswordHash,
		"hashing_algorithm": "rabbit_password_hashing_sha256",
		"tags":              tagList(u.Tags),
		"limits":            limits,
	}
}

func (s *Server) users(w http.ResponseWriter, r *Request) {
	us, ok := s.usersOr404(w)
	if !ok {
		return
	}
	writeListOf(w, r, us.List(), func(u core.UserSpec) string { return u.Name }, userJSON)
}

func (s *Server) user(w http.ResponseWriter, r *Request) {
	us, ok := s.usersOr404(w)
	if !ok {
		return
	}
	u, ok := us.User(r.Var("user"))
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, userJSON(u))
}

// parseTags reads tags as RabbitMQ takes them: a comma-separated string
// or a list.
func parseTags(v any) []string {
	var out []string
	switch x := v.(type) {
	case string:
		for _, t := range strings.Split(x, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	case []any:
		for _, e := range x {
			if t, ok := e.(string); ok && t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

// putUser creates or updates a user: password or password_hash
// (rabbit_password_hashing_sha256), tags. 201 when created, 204 when
// updated. Users live until the broker stops unless the config file has
// them too.
func (s *Server) putUser(w http.ResponseWriter, r *Request) {
	us, ok := s.usersOr404(w)
	if !ok {
		return
	}
	name := r.Var("user")
	body, ok := decodeBody(w, r)
	if !ok {
		return
	}
	old, existed := us.User(name)
	spec := core.UserSpec{Name: name, Tags: parseTags(body["tags"])}
	if existed {
		spec.LoopbackOnly, spec.MaxConnections, spec.MaxChannels = old.LoopbackOnly, old.MaxConnections, old.MaxChannels
	}
	_, hasPw := body["password"]
	_, hasHash := body["password_hash"]
	switch {
	case hasPw:
		pw := stringField(body, "password")
		if pw == "" {
			badRequest(w, "password is empty")
			return
		}
		spec.PasswordHash = core.HashPassword(pw)
	case hasHash:
		if alg := stringField(body, "hashing_algorithm"); alg != "" && alg != "rabbit_password_hashing_sha256" {
			badRequest(w, "unsupported hashing_algorithm "+alg+": only rabbit_password_hashing_sha256")
			return
		}
		spec.PasswordHash = stringField(body, "password_hash")
		if spec.PasswordHash != "" {
			if err := core.CheckPasswordHash(spec.PasswordHash); err != nil {
				badRequest(w, err.Error())
				return
			}
		}
	case existed:
		spec.PasswordHash = old.PasswordHash
	default:
		badRequest(w, "[{key_missing,password}]")
		return
	}
	if _, ok := body["tags"]; !ok && existed {
		spec.Tags = old.Tags
	}
	if err := us.Put(spec); err != nil {
		badRequest(w, err.Error())
		return
	}
	s.log.Info("http: user saved", "user", name, "tags", spec.Tags, "by", r.User.Name)
	putDone(w, existed)
}

func (s *Server) deleteUser(w http.ResponseWriter, r *Request) {
	us, ok := s.usersOr404(w)
	if !ok {
		return
	}
	if !us.Delete(r.Var("user")) {
		notFound(w)
		return
	}
	s.log.Info("http: user deleted", "user", r.Var("user"), "by", r.User.Name)
	noContent(w)
}

func permJSON(p core.UserPermissions) map[string]any {
	return map[string]any{"user": p.User, "vhost": p.VHost, "configure": p.Configure, "write": p.Write, "read": p.Read}
}

func topicPermJSON(p core.UserTopicPermissions) map[string]any {
	return map[string]any{"user": p.User, "vhost": p.VHost, "exchange": p.Exchange, "write": p.Write, "read": p.Read}
}

// permissionList lists permissions, filtered by user and vhost ("": any).
func (s *Server) permissionList(w http.ResponseWriter, r *Request, user, vhost string) {
	if us, ok := s.usersOr404(w); ok {
		writeList(w, r, ownedBy(us.PermissionList(), user, vhost, func(p core.UserPermissions) (string, string) { return p.User, p.VHost }, permJSON))
	}
}

// topicPermissionList lists topic permissions, filtered as permissionList.
func (s *Server) topicPermissionList(w http.ResponseWriter, r *Request, user, vhost string) {
	if us, ok := s.usersOr404(w); ok {
		writeList(w, r, ownedBy(us.TopicPermissionList(), user, vhost, func(p core.UserTopicPermissions) (string, string) { return p.User, p.VHost }, topicPermJSON))
	}
}

// ownedBy renders the permissions of user on vhost ("": any) as JSON.
func ownedBy[P any](ps []P, user, vhost string, of func(P) (string, string), toJSON func(P) map[string]any) []map[string]any {
	items := []map[string]any{}
	for _, p := range ps {
		if u, v := of(p); (user == "" || u == user) && (vhost == "" || v == vhost) {
			items = append(items, toJSON(p))
		}
	}
	return items
}

func (s *Server) permissions(w http.ResponseWriter, r *Request) { s.permissionList(w, r, "", "") }

func (s *Server) topicPermissions(w http.ResponseWriter, r *Request) {
	s.topicPermissionList(w, r, "", "")
}

func (s *Server) userPermissions(w http.ResponseWriter, r *Request) {
	if s.userExists(w, r) {
		s.permissionList(w, r, r.Var("user"), "")
	}
}

func (s *Server) userTopicPermissions(w http.ResponseWriter, r *Request) {
	if s.userExists(w, r) {
		s.topicPermissionList(w, r, r.Var("user"), "")
	}
}

func (s *Server) vhostPermissions(w http.ResponseWriter, r *Request) {
	if _, ok := s.vhostOf(w, r); ok {
		s.permissionList(w, r, "", r.Var("vhost"))
	}
}

func (s *Server) vhostTopicPermissions(w http.ResponseWriter, r *Request) {
	if _, ok := s.vhostOf(w, r); ok {
		s.topicPermissionList(w, r, "", r.Var("vhost"))
	}
}

// userExists answers 404 unless {user} exists.
func (s *Server) userExists(w http.ResponseWriter, r *Request) bool {
	us, ok := s.usersOr404(w)
	if !ok {
		return false
	}
	if _, ok := us.User(r.Var("user")); !ok {
		notFound(w)
		return false
	}
	return true
}

// permTarget checks {vhost} and {user} of a /api/permissions/{vhost}/{user}.
func (s *Server) permTarget(w http.ResponseWriter, r *Request) (*core.Users, bool) {
	if s.opts.Broker.VHost(r.Var("vhost")) == nil || !s.userExists(w, r) {
		if s.opts.Broker.VHost(r.Var("vhost")) == nil {
			notFound(w)
		}
		return nil, false
	}
	return s.opts.Users, true
}

func (s *Server) permission(w http.ResponseWriter, r *Request) {
	us, ok := s.permTarget(w, r)
	if !ok {
		return
	}
	i := slices.IndexFunc(us.PermissionList(), func(p core.UserPermissions) bool {
		return p.User == r.Var("user") && p.VHost == r.Var("vhost")
	})
	if i < 0 {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, permJSON(us.PermissionList()[i]))
}

func (s *Server) putPermission(w http.ResponseWriter, r *Request) {
	us, ok := s.permTarget(w, r)
	if !ok {
		return
	}
	body, ok := decodeBody(w, r)
	if !ok {
		return
	}
	for _, k := range []string{"configure", "write", "read"} {
		if _, ok := body[k]; !ok {
			badRequest(w, "[{key_missing,"+k+"}]")
			return
		}
	}
	user, vhost := r.Var("user"), r.Var("vhost")
	existed := slices.ContainsFunc(us.PermissionList(), func(p core.UserPermissions) bool { return p.User == user && p.VHost == vhost })
	p := core.VHostPermissions{Configure: stringField(body, "configure"), Write: stringField(body, "write"), Read: stringField(body, "read")}
	if err := us.SetPermissions(user, vhost, p); err != nil {
		badRequest(w, err.Error())
		return
	}
	putDone(w, existed)
}

func (s *Server) deletePermission(w http.ResponseWriter, r *Request) {
	us, ok := s.permTarget(w, r)
	if !ok {
		return
	}
	if err := us.ClearPermissions(r.Var("user"), r.Var("vhost")); err != nil {
		coreError(w, err)
		return
	}
	noContent(w)
}

func (s *Server) topicPermission(w http.ResponseWriter, r *Request) {
	us, ok := s.permTarget(w, r)
	if !ok {
		return
	}
	items := []map[string]any{}
	for _, p := range us.TopicPermissionList() {
		if p.User == r.Var("user") && p.VHost == r.Var("vhost") {
			items = append(items, topicPermJSON(p))
		}
	}
	if len(items) == 0 {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, items)
}

func (s *Server) putTopicPermission(w http.ResponseWriter, r *Request) {
	us, ok := s.permTarget(w, r)
	if !ok {
		return
	}
	body, ok := decodeBody(w, r)
	if !ok {
		return
	}
	x := stringField(body, "exchange")
	if x == "" {
		badRequest(w, "[{key_missing,exchange}]")
		return
	}
	user, vhost := r.Var("user"), r.Var("vhost")
	existed := slices.ContainsFunc(us.TopicPermissionList(), func(p core.UserTopicPermissions) bool {
		return p.User == user && p.VHost == vhost && p.Exchange == x
	})
	tp := core.TopicPermissions{Exchange: x, Write: stringField(body, "write"), Read: stringField(body, "read")}
	if err := us.SetTopicPermissions(user, vhost, tp); err != nil {
		badRequest(w, err.Error())
		return
	}
	putDone(w, existed)
}

// deleteTopicPermission clears the user's topic permissions in the vhost,
// or only those on ?exchange=.
func (s *Server) deleteTopicPermission(w http.ResponseWriter, r *Request) {
	us, ok := s.permTarget(w, r)
	if !ok {
		return
	}
	if err := us.ClearTopicPermissions(r.Var("user"), r.Var("vhost"), r.URL.Query().Get("exchange")); err != nil {
		coreError(w, err)
		return
	}
	noContent(w)
}
