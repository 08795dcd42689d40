// Package msgcodec is the binary encoding of core's message types: field
// tables (core.Table: message headers, and the arguments of queues,
// exchanges and bindings) and message properties (core.Properties).
//
// The encoding is AMQP 0-9-1's field table and basic property list,
// because core's model is RabbitMQ's. It is kept here, next to the types
// it encodes, rather than in amqp/wire, because it is also the disk format:
// persistence writes it into every stored message, queue, exchange and
// binding, so it must change only on purpose, never as a side effect of
// work on the AMQP codec. amqp/wire frames these bytes into content headers
// and method arguments; persistence pins them with golden records. The
// package imports only core, so both can import it and dependencies still
// point inward.
//
// Decoding errors are *Error: what was malformed, with no protocol reply
// code. amqp/wire answers them with 502 SYNTAX_ERROR; persistence reports
// a corrupt record. Encoding a value outside the core.Table mapping is a
// programmer's error, reported as ErrUnencodable.
//
// Decoders index into the input and copy what they keep (strings, tables,
// byte arrays); nothing returned aliases the input. Encoders append to a
// caller-owned []byte and allocate nothing for small tables, so that the
// AMQP delivery path stays allocation-free.
package msgcodec
