// Package validate is the gateway's request validation and header hygiene
// at the edge: every request is checked against the route's OpenAPI 3
// document (method, path, parameters, body schema, content type) after
// bounded reads of its headers and body and a streaming scan of JSON bodies
// for nesting depth and duplicate keys; client-sent identity, forwarding and
// hop-by-hop headers are stripped before the gateway sets its own. Refusals
// are typed errors with a status, a stable code and a message that names the
// offending parameter or field and never echoes the body or validator
// internals.
package validate
