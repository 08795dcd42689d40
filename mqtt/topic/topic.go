package topic

import "strings"

// Topic mapping between MQTT and AMQP, lossless both ways, as RabbitMQ's
// MQTT plugin intends it: the MQTT level separator "/" is the AMQP word
// separator ".", and a "." inside an MQTT level travels as "/" in the
// routing key, so "a/b.c" <-> "a.b/c". Filters map "+" to "*"; "#" stays.

// swapSeparators exchanges '/' and '.' in s; it is its own inverse.
func swapSeparators(s string) string {
	if strings.IndexByte(s, '/') < 0 && strings.IndexByte(s, '.') < 0 {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		switch c {
		case '/':
			b[i] = '.'
		case '.':
			b[i] = '/'
		}
	}
	return string(b)
}

// RoutingKey returns the AMQP routing key of an MQTT topic name.
func RoutingKey(name string) string { return swapSeparators(name) }

// Name returns the MQTT topic name of an AMQP routing key.
func Name(routingKey string) string { return swapSeparators(routingKey) }

// BindingKey returns the amq.topic binding key of an MQTT topic filter
// (without any $share/<group>/ prefix).
func BindingKey(filter string) string {
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		switch l {
		case "+":
			levels[i] = "*"
		case "#":
		default:
			levels[i] = strings.ReplaceAll(l, ".", "/")
		}
	}
	return strings.Join(levels, ".")
}

// Match reports whether an MQTT topic name matches a topic filter.
// Topics starting with "$" are not matched by a filter starting with a
// wildcard [MQTT-4.7.2-1].
func Match(filter, topic string) bool {
	if topic != "" && topic[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		if !fmore || !tmore {
			// "a/#" also matches "a" [MQTT-4.7.1-2].
			return fmore == tmore || (!tmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

// Shared splits a shared subscription's "$share/<group>/<filter>"; ok is
// false for an ordinary filter.
func Shared(filter string) (group, f string, ok bool) {
	rest, isShared := strings.CutPrefix(filter, "$share/")
	if !isShared {
		return "", filter, false
	}
	group, f, ok = strings.Cut(rest, "/")
	return group, f, ok
}

// ValidFilter checks a topic filter's wildcards [MQTT-4.7.1]: "#" only as
// the last level, "+" only as a whole level, and a shared subscription's
// group name without wildcards.
func ValidFilter(filter string) bool {
	if filter == "" {
		return false
	}
	if group, f, shared := Shared(filter); shared || strings.HasPrefix(filter, "$share/") {
		if !shared || group == "" || strings.ContainsAny(group, "+#") || f == "" {
			return false
		}
		filter = f
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}
