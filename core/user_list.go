package core

import (
	"slices"
	"strings"
)

// Listing of the internal user database, for the operations API and
// definitions export. Entries are replaced, never modified, so a listing
// copies pointers under the read lock and reads them after.

// UserPermissions are one user's permissions in one vhost.
type UserPermissions struct {
	User, VHost string
	VHostPermissions
}

// UserTopicPermissions are one user's topic permissions on one exchange
// of one vhost.
type UserTopicPermissions struct {
	User, VHost string
	TopicPermissions
}

// List returns every user's account, sorted by name. PasswordHash is the
// stored rabbit_password_hashing_sha256 hash, as definitions export it.
func (u *Users) List() []UserSpec {
	es := u.entries()
	out := make([]UserSpec, 0, len(es))
	for _, e := range es {
		out = append(out, e.spec)
	}
	return out
}

// User returns one user's account.
func (u *Users) User(name string) (UserSpec, bool) {
	e := u.entry(name)
	if e == nil {
		return UserSpec{}, false
	}
	return e.spec, true
}

// PermissionList returns every user's permissions, sorted by user then
// vhost.
func (u *Users) PermissionList() []UserPermissions {
	var out []UserPermissions
	for _, e := range u.entries() {
		for _, vhost := range sortedKeys(e.perms) {
			p := e.perms[vhost]
			out = append(out, UserPermissions{User: e.spec.Name, VHost: vhost,
				VHostPermissions: VHostPermissions{Configure: p[Configure].src, Write: p[Write].src, Read: p[Read].src}})
		}
	}
	return out
}

// TopicPermissionList returns every user's topic permissions, sorted by
// user, vhost and exchange.
func (u *Users) TopicPermissionList() []UserTopicPermissions {
	var out []UserTopicPermissions
	for _, e := range u.entries() {
		for _, vhost := range sortedKeys(e.topics) {
			byX := e.topics[vhost]
			for _, x := range sortedKeys(byX) {
				p := byX[x]
				out = append(out, UserTopicPermissions{User: e.spec.Name, VHost: vhost,
					TopicPermissions: TopicPermissions{Exchange: x, Write: p[Write].src, Read: p[Read].src}})
			}
		}
	}
	return out
}

// ClearTopicPermissions removes a user's topic permissions on exchange in
// vhost, or on every exchange of vhost if exchange is "".
func (u *Users) ClearTopicPermissions(user, vhost, exchange string) error {
	return u.update(user, func(e *userEntry) {
		e.topics = cloneMap(e.topics)
		if exchange == "" {
			delete(e.topics, vhost)
			return
		}
		byX := cloneMap(e.topics[vhost])
		delete(byX, exchange)
		if len(byX) == 0 {
			delete(e.topics, vhost)
		} else {
			e.topics[vhost] = byX
		}
	})
}

// entries returns the user entries sorted by name.
func (u *Users) entries() []*userEntry {
	u.mu.RLock()
	out := make([]*userEntry, 0, len(u.users))
	for _, e := range u.users {
		out = append(out, e)
	}
	u.mu.RUnlock()
	slices.SortFunc(out, func(a, b *userEntry) int { return strings.Compare(a.spec.Name, b.spec.Name) })
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
