package main

// The access database: what RabbitMQ keeps in its internal database and
// ferrymq's store does not (users, vhosts, permissions, topic
// permissions, vhost limits), saved in the data directory as RabbitMQ's
// definitions JSON, so that what the management API and definitions
// imports change survives a restart. The configuration file and flags
// still win for what they define: their users are taken from them at
// every start, as RabbitMQ's load_definitions is.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ferrymq/ferrymq/cmd/ferrymq/mgmt"
)

// accessFile is the access database's file in the data directory.
const accessFile = "definitions.json"

// accessSaveInterval is how often changes are looked for and saved: a
// crash loses at most this much of the operators' changes.
const accessSaveInterval = time.Second

type accessDB struct {
	path   string
	src    mgmt.DefinitionsSource
	log    *slog.Logger
	config map[string]bool // users the configuration defines: not taken from the file
	last   []byte          // what the file holds
}

func newAccessDB(dataDir string, src mgmt.DefinitionsSource, cfg *Config, log *slog.Logger) *accessDB {
	db := &accessDB{path: filepath.Join(dataDir, accessFile), src: src, log: log, config: map[string]bool{}}
	for _, u := range cfg.Users {
		db.config[u.Name] = true
	}
	return db
}

// load applies the saved file, if any: its vhosts, limits, users and
// their permissions, except the users the configuration defines; users
// that are in neither (guest, deleted through the API) are deleted.
func (db *accessDB) load() error {
	raw, err := os.ReadFile(db.path)
	if errors.Is(err, fs.ErrNotExist) || db.src.Users == nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("access database: %w", err)
	}
	d, err := mgmt.ParseDefinitions(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("access database %s: %w", db.path, err)
	}
	saved := map[string]bool{}
	users := d.Users[:0]
	for _, u := range d.Users {
		saved[u.Name] = true
		if !db.config[u.Name] {
			users = append(users, u)
		}
	}
	d.Users = users
	perms := d.Permissions[:0]
	for _, p := range d.Permissions {
		if !db.config[p.User] {
			perms = append(perms, p)
		}
	}
	d.Permissions = perms
	topics := d.TopicPermissions[:0]
	for _, p := range d.TopicPermissions {
		if !db.config[p.User] {
			topics = append(topics, p)
		}
	}
	d.TopicPermissions = topics
	// A saved user's permissions replace those it has by default (guest's)
	// rather than add to them. The entry stays: it keeps what the file
	// cannot say, guest's loopback-only restriction.
	for _, p := range db.src.Users.PermissionList() {
		if saved[p.User] && !db.config[p.User] {
			db.src.Users.ClearPermissions(p.User, p.VHost)
		}
	}
	for _, p := range db.src.Users.TopicPermissionList() {
		if saved[p.User] && !db.config[p.User] {
			db.src.Users.ClearTopicPermissions(p.User, p.VHost, "")
		}
	}
	res, err := db.src.Import(d)
	if err != nil {
		return fmt.Errorf("access database %s: %w", db.path, err)
	}
	for _, w := range res.Warnings {
		db.log.Warn("access database: "+w, "file", db.path)
	}
	for _, u := range db.src.Users.List() {
		if !saved[u.Name] && !db.config[u.Name] {
			db.src.Users.Delete(u.Name)
		}
	}
	db.last, _ = db.snapshot()
	db.log.Info("access database loaded", "file", db.path, "users", len(d.Users), "vhosts", len(d.VHosts))
	return nil
}

func (db *accessDB) snapshot() ([]byte, error) {
	d := db.src.ExportAccess()
	return json.MarshalIndent(d, "", " ")
}

// save writes the file if what it holds changed: to a temporary file,
// synced, then renamed over it, so that a crash leaves the old or the new
// one.
func (db *accessDB) save() error {
	b, err := db.snapshot()
	if err != nil {
		return err
	}
	if bytes.Equal(b, db.last) {
		return nil
	}
	tmp := db.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("access database: %w", err)
	}
	if _, err = f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, db.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("access database: %w", err)
	}
	if dir, err := os.Open(filepath.Dir(db.path)); err == nil {
		dir.Sync()
		dir.Close()
	}
	db.last = b
	return nil
}

// run saves changes every accessSaveInterval until ctx ends, then once
// more.
func (db *accessDB) run(ctx context.Context) {
	tick := time.NewTicker(accessSaveInterval)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			if err := db.save(); err != nil {
				db.log.Error("access database not saved", "err", err)
			}
			return
		case <-tick.C:
			err := db.save()
			switch {
			case err != nil && !failing:
				db.log.Error("access database not saved; retrying", "err", err)
			case err == nil && failing:
				db.log.Info("access database saved again")
			}
			failing = err != nil
		}
	}
}
