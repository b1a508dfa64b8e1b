-- The audit log: entries, the Merkle tree's stored hashes, its size, and
-- the signed checkpoints. Rows are only ever inserted; nothing updates or
-- deletes them except audit_head.size, which only grows.
CREATE TABLE audit_entries (
    idx  INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
-- hashes: the concatenated tlog stored hashes produced by appending record idx.
CREATE TABLE audit_hashes (
    record INTEGER PRIMARY KEY,
    hashes BLOB NOT NULL
);
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL CHECK (size >= 0)
);
INSERT INTO audit_head (id, size) VALUES (1, 0);
-- One checkpoint per tree size, ever: the primary key makes a fork impossible.
CREATE TABLE audit_checkpoints (
    size       INTEGER PRIMARY KEY,
    root       BLOB NOT NULL,
    note       BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
-- Payloads too large for one entry, addressed by their SHA-256.
CREATE TABLE audit_blobs (
    sha256 BLOB PRIMARY KEY,
    data   BLOB NOT NULL
);
CREATE TABLE admin_credentials (
    id         TEXT PRIMARY KEY,
    hash       BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
