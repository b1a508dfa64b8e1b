package validate

import (
	"fmt"
	"net/http"

	"github.com/bulwarksec/bulwark/internal/httpapi"
)

// Stable error codes of refusals, in addition to the shared httpapi codes.
const (
	// CodeHeadersTooLarge refuses a request with too many or too large headers (431).
	CodeHeadersTooLarge = "request_headers_too_large"
	// CodeMethodNotAllowed refuses a method the document does not declare for the path (405).
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeJSONTooDeep refuses a JSON body nested deeper than MaxJSONDepth (400).
	CodeJSONTooDeep = "json_too_deep"
	// CodeDuplicateKey refuses a JSON object with a repeated key (400).
	CodeDuplicateKey = "json_duplicate_key"
)

// Error is a refusal: an HTTP status, a stable code and a message that is
// safe to send to the client.
type Error struct {
	Status  int
	Code    string
	Message string
	// Allow lists the methods the path accepts when Status is 405.
	Allow []string
}

// Error returns "code: message".
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// HTTP converts e to the shared API error type for httpapi.WriteError.
func (e *Error) HTTP() *httpapi.Error {
	return &httpapi.Error{Status: e.Status, Code: e.Code, Message: e.Message}
}

func refuse(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func notFound() *Error {
	return refuse(http.StatusNotFound, httpapi.CodeNotFound, "no such route")
}
