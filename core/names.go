package core

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
)

// reservedPrefix starts the names that only the server may create (RabbitMQ's
// check_name): amq.* exchanges are pre-declared, amq.gen-* queues are
// server-named.
const reservedPrefix = "amq."

// IsReservedName reports whether name is in the amq.* namespace only the
// server creates.
func IsReservedName(name string) bool { return strings.HasPrefix(name, reservedPrefix) }

// checkName refuses a client-chosen name in the reserved namespace. kind is
// "queue" or "exchange", as in RabbitMQ's text.
func checkName(kind, name string) error {
	if strings.HasPrefix(name, reservedPrefix) {
		return Errorf(CodeAccessRefused, "%s name '%s' contains reserved prefix 'amq.*'", kind, name)
	}
	return nil
}

// ServerQueueName returns a fresh "amq.gen-" name: 16 random bytes in
// unpadded base64url (22 characters), as rabbit_guid:binary does. Random
// rather than sequential so a client cannot guess another client's reply
// queue.
func ServerQueueName() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it panics instead)
	return "amq.gen-" + base64.RawURLEncoding.EncodeToString(b[:])
}

// rs renders a resource the way RabbitMQ's rabbit_misc:rs does in reply
// texts: "queue 'q' in vhost '/'".
func rs(kind, name, vhost string) string {
	return kind + " '" + name + "' in vhost '" + vhost + "'"
}
