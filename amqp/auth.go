package amqp

import (
	"bytes"
	"encoding/binary"

	"github.com/ferrymq/ferrymq/amqp/wire"
)

// mechanisms is what connection.start offers, most preferred first.
const mechanisms = "PLAIN AMQPLAIN"

// credentials extracts a user name and password from a connection.start-ok
// response for one of the offered SASL mechanisms.
func credentials(mechanism, response string) (user, pass string, err error) {
	switch mechanism {
	case "PLAIN":
		// [authzid] NUL authcid NUL passwd (RFC 4616).
		parts := bytes.Split([]byte(response), []byte{0})
		if len(parts) != 3 {
			return "", "", newError(wire.AccessRefused, "PLAIN login refused: malformed response")
		}
		return string(parts[1]), string(parts[2]), nil
	case "AMQPLAIN":
		// A field table without its length prefix, as RabbitMQ reads it.
		b := make([]byte, 4, 4+len(response))
		binary.BigEndian.PutUint32(b, uint32(len(response)))
		t, rest, err := wire.ReadTable(append(b, response...))
		if err != nil || len(rest) != 0 {
			return "", "", newError(wire.AccessRefused, "AMQPLAIN login refused: malformed response")
		}
		user, ok1 := t["LOGIN"].(string)
		pass, ok2 := t["PASSWORD"].(string)
		if !ok1 || !ok2 {
			return "", "", newError(wire.AccessRefused, "AMQPLAIN login refused: LOGIN or PASSWORD missing")
		}
		return user, pass, nil
	}
	return "", "", newError(wire.CommandInvalid, "unknown authentication mechanism '%s'", mechanism)
}
