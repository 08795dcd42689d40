package amqp_test

import (
	"testing"

	"github.com/ferrymq/ferrymq/core"
)

// addUser adds a user with password pw and every permission on "/".
func addUser(t testing.TB, users *core.Users, name, pw string, tags ...string) {
	t.Helper()
	if err := users.Put(core.UserSpec{Name: name, PasswordHash: core.HashPassword(pw), Tags: tags}); err != nil {
		t.Fatal(err)
	}
	if err := users.SetPermissions(name, "/", core.FullPermissions); err != nil {
		t.Fatal(err)
	}
}

// guestIn returns the default users, with guest given every permission
// in vhost as well as in "/".
func guestIn(t testing.TB, vhost string) *core.Auth {
	t.Helper()
	users := core.DefaultUsers()
	if err := users.SetPermissions("guest", vhost, core.FullPermissions); err != nil {
		t.Fatal(err)
	}
	return core.NewAuth(users)
}
