package mgmt

import "net/http"

// ferrymq has no policies or runtime parameters (README, Limitations).
// Their lists answer empty, which is true and lets tools that list them
// (rabbitmqadmin list policies, Terraform's provider) go on; setting one
// is refused with the reason instead of a bare 404.

// emptyList answers an empty list.
func (s *Server) emptyList(w http.ResponseWriter, r *Request) {
	writeList(w, r, nil)
}

// noPolicies refuses to set a policy or parameter.
func (s *Server) noPolicies(w http.ResponseWriter, r *Request) {
	badRequest(w, "ferrymq has no policies or runtime parameters: set queue features with x-arguments when declaring the queue")
}
