package mgmt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/ferrymq/ferrymq/core"
)

// maxBody bounds a request body (a publish's payload included).
const maxBody = 64 << 20

// readBody reads the request body, at most maxBody bytes. On error it has
// answered 400, or 413 for a larger body.
func readBody(w http.ResponseWriter, r *Request) ([]byte, bool) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		badRequest(w, "cannot read body: "+err.Error())
		return nil, false
	}
	if len(raw) > maxBody {
		writeError(w, http.StatusRequestEntityTooLarge, "bad_request", "body larger than "+strconv.Itoa(maxBody)+" bytes")
		return nil, false
	}
	return raw, true
}

// decodeBody reads a JSON object body; an empty body is an empty
// object. On error it has answered 400.
func decodeBody(w http.ResponseWriter, r *Request) (map[string]any, bool) {
	raw, ok := readBody(w, r)
	if !ok {
		return nil, false
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return map[string]any{}, true
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		badRequest(w, "bad JSON body: "+err.Error())
		return nil, false
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, true
}

// boolField reads a boolean that rabbitmqadmin may send as "true"/"false".
func boolField(m map[string]any, key string, def bool) (bool, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return def, nil
	}
	switch x := v.(type) {
	case bool:
		return x, nil
	case string:
		switch strings.ToLower(x) {
		case "true":
			return true, nil
		case "false", "":
			return false, nil
		}
	}
	return false, fmt.Errorf("%s: not a boolean: %v", key, v)
}

// stringField reads a string field.
func stringField(m map[string]any, key string) string {
	switch x := m[key].(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	}
	return ""
}

// intField reads an integer that may come as a number or a string.
func intField(m map[string]any, key string, def int64) (int64, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return def, nil
	}
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n, nil
		}
	case string:
		if n, err := strconv.ParseInt(x, 10, 64); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s: not an integer: %v", key, v)
}

// tableField reads an arguments/headers object as an AMQP table. JSON
// integers become int64 (AMQP long), other numbers float64, objects
// nested tables, as RabbitMQ converts them.
func tableField(m map[string]any, key string) (core.Table, error) {
	v, ok := m[key]
	if !ok || v == nil {
		return nil, nil
	}
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			return nil, nil
		}
		return toTable(x), nil
	case string:
		// rabbitmqadmin passes arguments as JSON text only when asked to
		// parse it; an empty string is no arguments.
		if strings.TrimSpace(x) == "" {
			return nil, nil
		}
		dec := json.NewDecoder(strings.NewReader(x))
		dec.UseNumber()
		var mm map[string]any
		if err := dec.Decode(&mm); err != nil {
			return nil, fmt.Errorf("%s: not a JSON object: %v", key, err)
		}
		return toTable(mm), nil
	}
	return nil, fmt.Errorf("%s: not an object", key)
}

func toTable(m map[string]any) core.Table {
	t := make(core.Table, len(m))
	for k, v := range m {
		t[k] = toAMQP(v)
	}
	return t
}

func toAMQP(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
			return int64(f)
		}
		return f
	case map[string]any:
		return toTable(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = toAMQP(e)
		}
		return out
	}
	return v
}
