-- The audit log: entries, the Merkle tree's stored hashes, its size, and
-- the signed checkpoints. Rows are only ever inserted; nothing updates or
-- deletes them except audit_head.size, which only grows.
CREATE TABLE audit_entries (
    idx  BIGINT PRIMARY KEY,
    data BYTEA NOT NULL
);
-- hashes: the concatenated tlog stored hashes produced by appending record idx.
CREATE TABLE audit_hashes (
    record BIGINT PRIMARY KEY,
    hashes BYTEA NOT NULL
);
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL CHECK (size >= 0)
);
INSERT INTO audit_head (id, size) VALUES (1, 0);
-- One checkpoint per tree size, ever: the primary key makes a fork impossible.
CREATE TABLE audit_checkpoints (
    size       BIGINT PRIMARY KEY,
    root       BYTEA NOT NULL,
    note       BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
-- Payloads too large for one entry, addressed by their SHA-256.
CREATE TABLE audit_blobs (
    sha256 BYTEA PRIMARY KEY,
    data   BYTEA NOT NULL
);
CREATE TABLE admin_credentials (
    id         TEXT PRIMARY KEY,
    hash       BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
