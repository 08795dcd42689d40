package interop_test

// The tests run a binary built from these packages, which go test cannot
// see: importing them keys its test cache on their source, so a change to
// the broker reruns these tests instead of replaying a cached pass.
import (
	_ "github.com/ferrymq/ferrymq/amqp"
	_ "github.com/ferrymq/ferrymq/bridge"
	_ "github.com/ferrymq/ferrymq/core"
	_ "github.com/ferrymq/ferrymq/mqtt"
	_ "github.com/ferrymq/ferrymq/persistence"
)
