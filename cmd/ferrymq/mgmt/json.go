package mgmt

import (
	"encoding/json"
	"net/http"
)

// writeJSON writes v as the JSON body of a status response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// WriteJSON answers 200 with v as JSON, for handlers of other files and
// packages.
func WriteJSON(w http.ResponseWriter, v any) { writeJSON(w, http.StatusOK, v) }

// errorBody is RabbitMQ's error body: {"error":"...","reason":"..."}.
type errorBody struct {
	Error  string `json:"error"`
	Reason string `json:"reason"`
}

// writeError answers status with RabbitMQ's error body.
func writeError(w http.ResponseWriter, status int, kind, reason string) {
	writeJSON(w, status, errorBody{Error: kind, Reason: reason})
}

// WriteError answers status with RabbitMQ's error body, for handlers of
// other files: kind is RabbitMQ's "error" ("bad_request", "Object Not
// Found", ...), reason the explanation.
func WriteError(w http.ResponseWriter, status int, kind, reason string) {
	writeError(w, status, kind, reason)
}

// notFound answers 404 as RabbitMQ does for an object that does not exist.
func notFound(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, "Object Not Found", "Not Found")
}

// NotFound answers 404 as RabbitMQ does for an object that does not exist.
func NotFound(w http.ResponseWriter) { notFound(w) }

// badRequest answers 400 with reason, as RabbitMQ does for a bad body.
func badRequest(w http.ResponseWriter, reason string) {
	writeError(w, http.StatusBadRequest, "bad_request", reason)
}

// notAuthorised answers 401 as RabbitMQ does for every refusal, the
// missing tag or vhost permission included.
func notAuthorised(w http.ResponseWriter, reason string) {
	writeError(w, http.StatusUnauthorized, "not_authorized", reason)
}

// noContent answers 204, RabbitMQ's answer to a successful change.
func noContent(w http.ResponseWriter) { w.WriteHeader(http.StatusNoContent) }

// putDone answers a PUT as RabbitMQ does: 201 Created for a new object,
// 204 for one that existed.
func putDone(w http.ResponseWriter, existed bool) {
	if existed {
		noContent(w)
		return
	}
	w.WriteHeader(http.StatusCreated)
}
