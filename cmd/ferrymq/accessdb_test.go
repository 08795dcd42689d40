package main

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/ferrymq/ferrymq/cmd/ferrymq/mgmt"
	"github.com/ferrymq/ferrymq/core"
)

// TestAccessDBReload: what is saved comes back in a fresh broker, guest
// stays loopback-only, removed permissions stay removed, and the config's
// users win.
func TestAccessDBReload(t *testing.T) {
	dir := t.TempDir()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := &Config{Users: []UserConfig{{Name: "carol", Password: "from-config"}}}
	fresh := func() (*core.Broker, *core.Users, *accessDB) {
		b := core.NewBroker(core.Options{})
		t.Cleanup(b.Close)
		users, err := buildUsers(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return b, users, newAccessDB(dir, mgmt.DefinitionsSource{Broker: b, Users: users}, cfg, log)
	}
	b, users, db := fresh()
	if err := db.load(); err != nil { // no file yet
		t.Fatal(err)
	}
	b.AddVHost("plant1").SetLimits(core.VHostLimits{MaxQueues: 3})
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(users.Put(core.UserSpec{Name: "bob", PasswordHash: core.HashPassword("s3cret"), Tags: []string{"monitoring"}}))
	must(users.SetPermissions("bob", "plant1", core.VHostPermissions{Write: ".*", Read: ".*"}))
	must(users.ClearPermissions("guest", "/"))
	must(users.SetPermissions("guest", "plant1", core.FullPermissions))
	must(users.Put(core.UserSpec{Name: "carol", PasswordHash: core.HashPassword("from-api")}))
	must(db.save())

	b2, users2, db2 := fresh()
	must(db2.load())
	login := func(user, pass string, loopback bool) error {
		_, err := users2.Authenticate(context.Background(), core.LoginRequest{Username: user, Password: pass, Loopback: loopback})
		return err
	}
	if err := login("bob", "s3cret", false); err != nil {
		t.Errorf("bob: %v", err)
	}
	if login("guest", "guest", false) == nil {
		t.Error("guest logs in from afar after a reload")
	}
	if err := login("guest", "guest", true); err != nil {
		t.Errorf("guest from loopback: %v", err)
	}
	if login("carol", "from-api", true) == nil || login("carol", "from-config", true) != nil {
		t.Error("carol's password is not the config's")
	}
	var guestVHosts []string
	for _, p := range users2.PermissionList() {
		if p.User == "guest" {
			guestVHosts = append(guestVHosts, p.VHost)
		}
	}
	if len(guestVHosts) != 1 || guestVHosts[0] != "plant1" {
		t.Errorf("guest's permissions after reload are on %v, want plant1 only", guestVHosts)
	}
	if v := b2.VHost("plant1"); v == nil || v.Limits().MaxQueues != 3 {
		t.Errorf("plant1 after reload: %v", v)
	}
}
