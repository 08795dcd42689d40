package interop_test

// The tests run a binary built from these packages, which go test cannot
// see: importing them keys its test cache on their source, so a change to
// the broker reruns these tests instead of replaying a cached pass. The
// main packages (cmd/ferrymq, cmd/ferrymqctl) cannot be imported: after a
// change to them alone, run go test -count=1 (CI never caches).
import (
	_ "github.com/ferrymq/ferrymq/amqp"
	_ "github.com/ferrymq/ferrymq/bridge"
	_ "github.com/ferrymq/ferrymq/cmd/ferrymq/authhttp"
	_ "github.com/ferrymq/ferrymq/cmd/ferrymq/console"
	_ "github.com/ferrymq/ferrymq/cmd/ferrymq/metrics"
	_ "github.com/ferrymq/ferrymq/cmd/ferrymq/mgmt"
	_ "github.com/ferrymq/ferrymq/core"
	_ "github.com/ferrymq/ferrymq/mqtt"
	_ "github.com/ferrymq/ferrymq/persistence"
)
