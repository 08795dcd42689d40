package amqp

import (
	"testing"

	"github.com/ferrymq/ferrymq/amqp/wire"
	"github.com/ferrymq/ferrymq/core"
)

// TestCoreReplyCodesMatchSpec: core keeps its own copy of the reply codes
// (it imports nothing of ours), and a core.Error's text starts with
// core.CodeName, which goes out as the reply text. Both copies must agree
// with the table generated from the spec.
func TestCoreReplyCodesMatchSpec(t *testing.T) {
	for _, code := range []int{
		core.CodeContentTooLarge, core.CodeNoRoute, core.CodeNoConsumers, core.CodeConnectionForced,
		core.CodeInvalidPath, core.CodeAccessRefused, core.CodeNotFound, core.CodeResourceLocked,
		core.CodePreconditionFailed, core.CodeFrameError, core.CodeSyntaxError, core.CodeCommandInvalid,
		core.CodeChannelError, core.CodeUnexpectedFrame, core.CodeResourceError, core.CodeNotAllowed,
		core.CodeNotImplemented, core.CodeInternalError,
	} {
		if got, want := core.CodeName(code), wire.ReplyCodeName(uint16(code)); got != want {
			t.Errorf("code %d: core names it %q, the spec %q", code, got, want)
		}
	}
}
