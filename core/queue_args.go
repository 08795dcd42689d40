package core

import (
	"fmt"
	"strconv"
	"time"
)

// overflow is the x-overflow behaviour of a queue with a length limit.
type overflow uint8

const (
	dropHead         overflow = iota // drop (dead-letter) the oldest ready messages
	rejectPublish                    // refuse new messages (publisher nack)
	rejectPublishDLX                 // refuse and dead-letter new messages
)

// maxExpiry is RabbitMQ's ?MAX_EXPIRY_TIMER: the largest x-message-ttl,
// x-expires or expiration it accepts, in milliseconds.
const maxExpiry = 4294967295

// maxPriority is RabbitMQ's ?MAX_SUPPORTED_PRIORITY.
const maxPriority = 255

// queueArgs is the parsed form of a queue's x-arguments. It is immutable after
// DeclareQueue, but for expires (VHost.SetQueueExpires, under the queue's
// lock).
type queueArgs struct {
	messageTTL    time.Duration // valid if hasMessageTTL
	hasMessageTTL bool
	expires       time.Duration // 0 = the queue never expires
	maxLength     int64         // -1 = unlimited
	maxBytes      int64         // -1 = unlimited
	overflow      overflow
	dlx           string // valid if hasDLX
	hasDLX        bool
	dlrk          string // valid if hasDLRK
	hasDLRK       bool
	levels        int // number of priority levels: x-max-priority+1, or 1
	singleActive  bool
}

// argValidators lists the arguments RabbitMQ validates on declare
// (rabbit_amqqueue:declare_args), in its order: the first failing one is
// reported. Unknown arguments are accepted and ignored, as RabbitMQ does.
var argValidators = []struct {
	key   string
	check func(v any, args Table) string // "" = valid, else the Erlang error term
}{
	{"x-expires", checkExpiresArg},
	{"x-message-ttl", checkMessageTTLArg},
	{"x-dead-letter-exchange", checkStringArg},
	{"x-dead-letter-routing-key", checkDLRKArg},
	{"x-max-length", checkNonNegIntArg},
	{"x-max-length-bytes", checkNonNegIntArg},
	{"x-max-priority", checkMaxPriorityArg},
	{"x-overflow", checkOverflowArg},
	{"x-single-active-consumer", checkBoolArg},
}

// equivalenceKeys are the arguments a redeclaration must repeat with an
// equivalent value (RabbitMQ's classic-queue queue_arguments).
var equivalenceKeys = []string{
	"x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
	"x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow",
	"x-queue-mode", "x-single-active-consumer",
}

// parseQueueArgs validates args as RabbitMQ's queue.declare does and returns
// their parsed form. Errors are 406 with RabbitMQ's texts.
func parseQueueArgs(queue, vhost string, args Table) (queueArgs, error) {
	// The channel checks the DLX name's type before the queue module
	// validates anything, with its own wording (rabbit_channel's r_arg).
	if v, ok := args["x-dead-letter-exchange"]; ok {
		if _, isStr := v.(string); !isStr {
			return queueArgs{}, Errorf(CodePreconditionFailed, "invalid type '%s' for arg 'x-dead-letter-exchange' in %s",
				amqpTypeName(v), rs("queue", queue, vhost))
		}
	}
	for _, a := range argValidators {
		v, ok := args[a.key]
		if !ok {
			continue
		}
		if term := a.check(v, args); term != "" {
			return queueArgs{}, Errorf(CodePreconditionFailed, "invalid arg '%s' for %s: %s",
				a.key, rs("queue", queue, vhost), term)
		}
	}
	qa := queueArgs{maxLength: -1, maxBytes: -1, levels: 1}
	if v, ok := IntArg(args["x-message-ttl"]); ok {
		qa.messageTTL, qa.hasMessageTTL = time.Duration(v)*time.Millisecond, true
	}
	if v, ok := IntArg(args["x-expires"]); ok {
		qa.expires = time.Duration(v) * time.Millisecond
	}
	if v, ok := IntArg(args["x-max-length"]); ok {
		qa.maxLength = v
	}
	if v, ok := IntArg(args["x-max-length-bytes"]); ok {
		qa.maxBytes = v
	}
	if v, ok := IntArg(args["x-max-priority"]); ok {
		qa.levels = int(v) + 1
	}
	switch args["x-overflow"] {
	case "reject-publish":
		qa.overflow = rejectPublish
	case "reject-publish-dlx":
		qa.overflow = rejectPublishDLX
	}
	qa.dlx, qa.hasDLX = args["x-dead-letter-exchange"].(string)
	qa.dlrk, qa.hasDLRK = args["x-dead-letter-routing-key"].(string)
	qa.singleActive, _ = args["x-single-active-consumer"].(bool)
	return qa, nil
}

// IntArg returns the value of an AMQP table integer of any width (x-arguments
// may use any of them), and whether v is one.
func IntArg(v any) (int64, bool) {
	switch x := v.(type) {
	case int8:
		return int64(x), true
	case uint8:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}

func unacceptableType(v any) string { return "{unacceptable_type," + amqpTypeName(v) + "}" }

// checkExpiry is rabbit_misc:check_expiry.
func checkExpiry(n int64) string {
	switch {
	case n < 0:
		return fmt.Sprintf("{value_negative,%d}", n)
	case n > maxExpiry:
		return fmt.Sprintf("{value_too_big,%d}", n)
	}
	return ""
}

func checkExpiresArg(v any, _ Table) string {
	n, ok := IntArg(v)
	switch {
	case !ok:
		return unacceptableType(v)
	case n == 0:
		return "{value_zero,0}"
	}
	return checkExpiry(n)
}

func checkMessageTTLArg(v any, _ Table) string {
	n, ok := IntArg(v)
	if !ok {
		return unacceptableType(v)
	}
	return checkExpiry(n)
}

func checkNonNegIntArg(v any, _ Table) string {
	n, ok := IntArg(v)
	switch {
	case !ok:
		return unacceptableType(v)
	case n < 0:
		return fmt.Sprintf("{value_negative,%d}", n)
	}
	return ""
}

func checkMaxPriorityArg(v any, args Table) string {
	if term := checkNonNegIntArg(v, args); term != "" {
		return term
	}
	if n, _ := IntArg(v); n > maxPriority {
		return fmt.Sprintf("{max_value_exceeded,%d}", n)
	}
	return ""
}

func checkStringArg(v any, _ Table) string {
	if _, ok := v.(string); !ok {
		return unacceptableType(v)
	}
	return ""
}

func checkDLRKArg(v any, args Table) string {
	if _, ok := v.(string); !ok {
		return unacceptableType(v)
	}
	if _, ok := args["x-dead-letter-exchange"]; !ok {
		return "routing_key_but_no_dlx_defined"
	}
	return ""
}

func checkOverflowArg(v any, _ Table) string {
	s, ok := v.(string)
	if !ok {
		return unacceptableType(v)
	}
	switch s {
	case "drop-head", "reject-publish", "reject-publish-dlx":
		return ""
	}
	return "invalid_overflow"
}

func checkBoolArg(v any, _ Table) string {
	if _, ok := v.(bool); !ok {
		return unacceptableType(v)
	}
	return ""
}

// assertArgsEquivalence is rabbit_misc:assert_args_equivalence: for each of
// keys, the current and requested values must both be absent, or be of the
// same type class (all integer widths are one class, float and double
// another) with equal values. kind/name/vhost name the resource in the text.
func assertArgsEquivalence(current, requested Table, keys []string, kind, name, vhost string) error {
	for _, k := range keys {
		cv, cok := current[k]
		rv, rok := requested[k]
		switch {
		case !cok && !rok:
			continue
		case cok && rok:
			if argValuesEquivalent(cv, rv) {
				continue
			}
			return inequivalent(k, kind, name, vhost, erlangPlain(rv), erlangPlain(cv))
		default:
			return inequivalent(k, kind, name, vhost, typedValue(rv, rok), typedValue(cv, cok))
		}
	}
	return nil
}

// inequivalent is rabbit_misc:equivalence_fail's 406.
func inequivalent(field, kind, name, vhost, received, current string) error {
	return Errorf(CodePreconditionFailed, "inequivalent arg '%s' for %s: received %s but current is %s",
		field, rs(kind, name, vhost), received, current)
}

// argValuesEquivalent compares two argument values by type class and value.
func argValuesEquivalent(a, b any) bool {
	if x, ok := IntArg(a); ok {
		y, ok := IntArg(b)
		return ok && x == y
	}
	if x, ok := floatArg(a); ok {
		y, ok := floatArg(b)
		return ok && x == y
	}
	return fieldValueEqual(a, b)
}

func floatArg(v any) (float64, bool) {
	switch x := v.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// erlangPlain renders a value as rabbit_misc's val/1 does for an untyped
// value: quoted, strings raw.
func erlangPlain(v any) string {
	switch x := v.(type) {
	case string:
		return "'" + x + "'"
	case []byte:
		return "'" + string(x) + "'"
	case bool:
		return "'" + strconv.FormatBool(x) + "'"
	}
	if n, ok := IntArg(v); ok {
		return "'" + strconv.FormatInt(n, 10) + "'"
	}
	return "'" + erlangTerm(v) + "'"
}

// typedValue renders a table entry as rabbit_misc's val/1 does for a
// {Type, Value} pair, or "none" when absent.
func typedValue(v any, present bool) string {
	if !present {
		return "none"
	}
	return "the value " + erlangPlain(v) + " of type '" + amqpTypeName(v) + "'"
}

// BacklogLimit caps a queue's ready messages the way Mosquitto caps a
// session's queue (max_queued_messages, max_queued_bytes): only messages
// that cannot be delivered at once count, not those in flight. Beyond it a
// message is dropped if DropAll is set or it is transient (counted in
// QueueStats.Discarded, the publisher not told, as Mosquitto drops QoS 0);
// a persistent one waits on disk if the queue is durable (paged out, as
// over the memory budget), else in memory, where the memory limit bounds
// it: under the memory alarm publishers are held back, and a queue over
// its share refuses (Broker.WatchMemory). These are not RabbitMQ x-arguments: the MQTT
// listener sets them on its sessions' queues from its own configuration.
type BacklogLimit struct {
	Messages int64 // ready messages; 0: no limit
	Bytes    int64 // body bytes of ready messages; 0: no limit
	DropAll  bool  // drop persistent messages too (a QoS 0 queue)
}

// SetBacklogLimit sets (or, with the zero BacklogLimit, removes) the
// queue's backlog limit. Messages already queued stay.
func (q *Queue) SetBacklogLimit(l BacklogLimit) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.backlog = l
}

// backlogFullLocked reports whether a message of size bytes would take the
// ready messages past the backlog limit.
func (q *Queue) backlogFullLocked(size int64) bool {
	l := &q.backlog
	return (l.Messages > 0 && int64(q.ready) >= l.Messages) ||
		(l.Bytes > 0 && q.readyBytes+size > l.Bytes)
}
