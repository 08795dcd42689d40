package core

import (
	"bytes"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// headersMatcher matches message headers against binding arguments, following
// RabbitMQ's rabbit_exchange_type_headers (3.13+/4.x):
//
//   - x-match "all" (also when absent or not a recognised string) needs every
//     argument to match; "any" needs at least one. A binding with no arguments
//     to compare therefore matches every message under "all" and none under
//     "any".
//   - x-match itself is never compared. Other arguments whose key starts with
//     "x-" are skipped by "all"/"any" and compared by "all-with-x"/"any-with-x".
//   - An argument with a void value (nil) matches when the header is present,
//     whatever its value (including void).
//   - Otherwise the header must be present and equal; see headerValueEqual.
//
// There is no index to narrow the candidates: like RabbitMQ, match tests each
// binding, but against arguments compiled at add time (x-match parsed once,
// skipped keys dropped), so matching allocates nothing.
type headersMatcher struct {
	index bindingIndex
	all   bindingList[headersBinding]
}

// headersBinding is a binding with its arguments compiled for matching.
type headersBinding struct {
	b        *Binding
	matchAny bool
	args     []headersArg // sorted by key, so results do not depend on map order
}

type headersArg struct {
	key   string
	value any
	void  bool
}

func newHeadersMatcher() *headersMatcher {
	return &headersMatcher{index: newBindingIndex()}
}

func compileHeadersBinding(b *Binding) headersBinding {
	hb := headersBinding{b: b}
	withX := false
	// A non-string or unknown x-match means "all": RabbitMQ's parse_x_match
	// fallback for bindings created before validation existed.
	switch mode, _ := b.Arguments["x-match"].(string); mode {
	case "any":
		hb.matchAny = true
	case "any-with-x":
		hb.matchAny, withX = true, true
	case "all-with-x":
		withX = true
	}
	for k, v := range b.Arguments {
		if k == "x-match" || (!withX && strings.HasPrefix(k, "x-")) {
			continue
		}
		hb.args = append(hb.args, headersArg{key: k, value: v, void: v == nil})
	}
	sort.Slice(hb.args, func(i, j int) bool { return hb.args[i].key < hb.args[j].key })
	return hb
}

func (m *headersMatcher) add(b *Binding) bool {
	s := m.index.insert(b)
	if s == nil {
		return false
	}
	m.all.push(compileHeadersBinding(b), s)
	return true
}

func (m *headersMatcher) remove(b *Binding) *Binding {
	s := m.index.delete(b)
	if s == nil {
		return nil
	}
	m.all.remove(s)
	return s.b
}

func (m *headersMatcher) match(_ string, headers Table, visit func(*Binding)) {
	for i := range m.all.items {
		if hb := &m.all.items[i]; hb.matches(headers) {
			visit(hb.b)
		}
	}
}

func (m *headersMatcher) each(fn func(*Binding)) { m.index.each(fn) }

func (m *headersMatcher) len() int { return m.index.n }

func (hb *headersBinding) matches(headers Table) bool {
	for i := range hb.args {
		if hb.args[i].matches(headers) == hb.matchAny {
			// any: first hit decides true; all: first miss decides false.
			return hb.matchAny
		}
	}
	return !hb.matchAny
}

func (a *headersArg) matches(headers Table) bool {
	v, ok := headers[a.key] // a nil Table reads as empty
	return ok && (a.void || headerValueEqual(a.value, v))
}

// headerValueEqual reports whether a message header value equals a binding
// argument, the way RabbitMQ compares them. RabbitMQ strips the AMQP type tags
// from the top-level header values (mc:routing_headers) and compares with the
// exact-equality operator =:= against the argument's untagged value, so:
//
//   - integers of any width and signedness are equal when their values are
//     (int32 5 = int64 5 = uint8 5), since Erlang has one integer type;
//   - float32 and float64 are equal when their values are (Erlang has only
//     doubles), but an integer never equals a float (5 =:= 5.0 is false);
//   - string ('S') and []byte ('x') are both Erlang binaries: equal bytes match;
//   - bool, Decimal, timestamps, tables and arrays compare type-strictly, as
//     fieldValueEqual does: nested tables and arrays keep their type tags in
//     RabbitMQ too. Timestamps deliberately match timestamps of the same second;
//     RabbitMQ 4.x scales header timestamps to milliseconds but not arguments,
//     so there a timestamp argument can never match a timestamp header.
func headerValueEqual(want, got any) bool {
	switch w := want.(type) {
	case string:
		switch g := got.(type) {
		case string:
			return w == g
		case []byte:
			return string(g) == w
		}
		return false
	case []byte:
		switch g := got.(type) {
		case string:
			return string(w) == g
		case []byte:
			return bytes.Equal(w, g)
		}
		return false
	case float32:
		g, ok := floatArg(got)
		return ok && math.Float64bits(float64(w)) == math.Float64bits(g)
	case float64:
		g, ok := floatArg(got)
		return ok && math.Float64bits(w) == math.Float64bits(g)
	}
	if w, ok := IntArg(want); ok {
		g, ok := IntArg(got)
		return ok && w == g
	}
	return fieldValueEqual(want, got)
}

// validHeadersMatch checks the x-match argument of a headers-exchange binding
// as RabbitMQ's validate_binding does. The returned error's text is RabbitMQ's
// reply text (hence the capital letter and Erlang term syntax); the vhost sends
// it as 406 PRECONDITION_FAILED. An absent x-match is valid and means "all".
func validHeadersMatch(args Table) error {
	v, ok := args["x-match"]
	if !ok {
		return nil
	}
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("Invalid x-match field type %s (value %s); expected longstr",
			amqpTypeName(v), erlangTerm(v))
	}
	switch s {
	case "all", "any", "all-with-x", "any-with-x":
		return nil
	}
	return fmt.Errorf("Invalid x-match field value %s; expected all, any, all-with-x, or any-with-x",
		erlangTerm(s))
}

// amqpTypeName is RabbitMQ's name for the AMQP type of a table value.
func amqpTypeName(v any) string {
	switch v.(type) {
	case nil:
		return "void"
	case bool:
		return "bool"
	case int8:
		return "byte"
	case uint8:
		return "unsignedbyte"
	case int16:
		return "short"
	case uint16:
		return "unsignedshort"
	case int32:
		return "signedint"
	case uint32:
		return "unsignedint"
	case int64:
		return "long"
	case float32:
		return "float"
	case float64:
		return "double"
	case Decimal:
		return "decimal"
	case string:
		return "longstr"
	case []byte:
		return "binary"
	case []any:
		return "array"
	case time.Time:
		return "timestamp"
	case Table:
		return "table"
	}
	return fmt.Sprintf("%T", v)
}

// erlangTerm renders a table value roughly as Erlang's ~tp would, so error
// texts read like RabbitMQ's (<<"foo">> for a string, undefined for void).
func erlangTerm(v any) string {
	switch x := v.(type) {
	case nil:
		return "undefined"
	case string:
		return erlangBinary([]byte(x))
	case []byte:
		return erlangBinary(x)
	case Decimal:
		return fmt.Sprintf("{%d,%d}", x.Scale, x.Value)
	case time.Time:
		return strconv.FormatInt(x.Unix(), 10)
	}
	return fmt.Sprint(v)
}

func erlangBinary(b []byte) string {
	printable, ascii := utf8.Valid(b), true
	for _, r := range string(b) {
		if r >= utf8.RuneSelf {
			ascii = false
		}
		if !unicode.IsPrint(r) {
			printable = false
		}
	}
	if !printable {
		parts := make([]string, len(b))
		for i, c := range b {
			parts[i] = strconv.Itoa(int(c))
		}
		return "<<" + strings.Join(parts, ",") + ">>"
	}
	quoted := strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(string(b))
	if ascii {
		return `<<"` + quoted + `">>`
	}
	return `<<"` + quoted + `"/utf8>>`
}
