// Package audit is Bulwark's tamper-evident audit trail: an OCSF-shaped event
// schema with a canonical (RFC 8785) serialisation, an append-only RFC 6962
// Merkle log built on golang.org/x/mod/sumdb/tlog with group-committed,
// durable appends, signed C2SP checkpoints, inclusion and consistency proofs,
// the C2SP tlog-tiles read API, and a verifier that recomputes the tree from
// the entries and names the first one that does not match.
package audit
