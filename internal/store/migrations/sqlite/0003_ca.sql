-- The workload certificate authority (SPIFFE): intermediates, JWT-SVID
-- signing keys, registration entries, agent join tokens, the deny list and
-- the inventory of issued certificates. Times are Unix milliseconds. Join
-- tokens are stored only as their SHA-256 (hex); private keys only sealed.
-- The root key is never here: it stays offline (or, in dev mode, sealed in
-- the server's keystore).

-- Intermediate signing certificates. The newest row whose trusted_until is
-- NULL signs; a rotated-out row stays in the trust bundle until
-- trusted_until (the rotation overlap).
CREATE TABLE ca_intermediates (
    id            TEXT PRIMARY KEY,
    cert_der      BLOB NOT NULL,
    sealed_key    BLOB NOT NULL,
    not_before    INTEGER NOT NULL,
    not_after     INTEGER NOT NULL,
    created_at    INTEGER NOT NULL,
    trusted_until INTEGER
);

-- JWT-SVID signing keys (ES256), rotated with the intermediates.
CREATE TABLE ca_jwt_keys (
    kid           TEXT PRIMARY KEY,
    sealed_key    BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    trusted_until INTEGER
);

-- Registration entries: a SPIFFE ID, the agent allowed to serve it (''
-- means any agent) and the selectors (JSON) a workload must all match.
CREATE TABLE ca_entries (
    entry_id   TEXT PRIMARY KEY,
    spiffe_id  TEXT NOT NULL,
    parent_id  TEXT NOT NULL,
    selectors  TEXT NOT NULL,
    ttl_ms     INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX ca_entries_parent ON ca_entries (parent_id);

-- One-time agent join tokens.
CREATE TABLE ca_join_tokens (
    token_hash TEXT PRIMARY KEY,
    agent_id   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX ca_join_tokens_expiry ON ca_join_tokens (expires_at);

-- The deny list: revoked serials and quarantined SPIFFE IDs, in the order
-- they were added. Agents follow it by seq.
CREATE TABLE ca_deny (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    value      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (kind, value)
);

-- The inventory of issued X.509-SVIDs (serial in lowercase hex).
CREATE TABLE ca_certificates (
    serial     TEXT PRIMARY KEY,
    spiffe_id  TEXT NOT NULL,
    agent      TEXT NOT NULL,
    not_before INTEGER NOT NULL,
    not_after  INTEGER NOT NULL,
    issued_at  INTEGER NOT NULL,
    authority  TEXT NOT NULL
);
CREATE INDEX ca_certificates_not_after ON ca_certificates (not_after);
CREATE INDEX ca_certificates_issued_at ON ca_certificates (issued_at);

-- Intermediates waiting for an offline root's signature: the server made
-- the key (sealed) and a CSR; the signed certificate is matched to its row
-- by public key (DER SubjectPublicKeyInfo).
CREATE TABLE ca_pending_intermediates (
    id         TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    sealed_key BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
