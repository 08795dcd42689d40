package core

import (
	"reflect"
	"testing"
)

func TestUserListing(t *testing.T) {
	u := DefaultUsers()
	hash := HashPassword("pw")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(u.Put(UserSpec{Name: "bob", PasswordHash: hash, Tags: []string{"monitoring"}}))
	must(u.SetPermissions("bob", "plant1", VHostPermissions{Configure: "", Write: "^amq\\.topic$", Read: ".*"}))
	must(u.SetPermissions("bob", "/", FullPermissions))
	must(u.SetTopicPermissions("bob", "/", TopicPermissions{Exchange: "amq.topic", Write: "^{username}\\.", Read: ".*"}))
	must(u.SetTopicPermissions("bob", "/", TopicPermissions{Exchange: "x", Write: "", Read: "a"}))

	users := u.List()
	if len(users) != 2 || users[0].Name != "bob" || users[1].Name != "guest" || users[0].PasswordHash != hash {
		t.Fatalf("List = %+v", users)
	}
	if s, ok := u.User("bob"); !ok || !reflect.DeepEqual(s.Tags, []string{"monitoring"}) {
		t.Fatalf("User(bob) = %+v %v", s, ok)
	}
	if _, ok := u.User("nobody"); ok {
		t.Fatal("User(nobody) found")
	}
	wantPerms := []UserPermissions{
		{"bob", "/", FullPermissions},
		{"bob", "plant1", VHostPermissions{Configure: "", Write: "^amq\\.topic$", Read: ".*"}},
		{"guest", "/", FullPermissions},
	}
	if got := u.PermissionList(); !reflect.DeepEqual(got, wantPerms) {
		t.Fatalf("PermissionList = %+v, want %+v", got, wantPerms)
	}
	wantTopics := []UserTopicPermissions{
		{"bob", "/", TopicPermissions{Exchange: "amq.topic", Write: "^{username}\\.", Read: ".*"}},
		{"bob", "/", TopicPermissions{Exchange: "x", Write: "", Read: "a"}},
	}
	if got := u.TopicPermissionList(); !reflect.DeepEqual(got, wantTopics) {
		t.Fatalf("TopicPermissionList = %+v, want %+v", got, wantTopics)
	}
	must(u.ClearTopicPermissions("bob", "/", "x"))
	if got := u.TopicPermissionList(); !reflect.DeepEqual(got, wantTopics[:1]) {
		t.Fatalf("after clearing x: %+v", got)
	}
	must(u.ClearTopicPermissions("bob", "/", ""))
	if got := u.TopicPermissionList(); len(got) != 0 {
		t.Fatalf("after clearing all: %+v", got)
	}
	if err := u.ClearTopicPermissions("nobody", "/", ""); err == nil {
		t.Fatal("clearing an unknown user's topic permissions succeeded")
	}
}
