// Package wire is the AMQP 0-9-1 server codec: frames, methods and content
// headers, read from and written to byte slices. Field tables and the
// properties of a content header are the broker's own message format, kept
// in core/msgcodec (which persistence writes to disk too); this package
// frames them and answers their decoding errors with 502 SYNTAX_ERROR.
//
// Decoders index into the frame payload and copy only what they keep
// (strings, tables, byte arrays); every length read from the wire is checked
// against the bytes that remain before anything is sliced or allocated.
// Encoders append to a caller-owned []byte that the connection reuses, so the
// delivery path (AppendDeliver) does not allocate.
//
// The method structs, their codecs, DecodeMethod, MethodName, the class ids
// and the reply codes are generated from the spec XML shipped in the
// amqp091-go module (spec091.go, by gen.go); frames and content headers
// are written by hand.
package wire

//go:generate go run gen.go
