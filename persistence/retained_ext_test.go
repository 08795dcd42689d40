package persistence_test

import (
	"github.com/ferrymq/ferrymq/mqtt"
	"github.com/ferrymq/ferrymq/persistence"
)

// The broker wires the store into mqtt as its RetainStore.
var _ mqtt.RetainStore = (*persistence.Store)(nil)
