package mqtt

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
