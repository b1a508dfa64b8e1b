-- The policy repository: versioned Cedar policy sets, the entity store and
-- the signed bundles that carry both to enforcement points. Times are Unix
-- milliseconds. Every change is one transaction that locks policy_head.

-- Every policy set ever pushed, oldest first. A rollback is a new version
-- with an older version's files (rollback_of), so history stays linear.
-- files is a JSON object: file name -> Cedar text.
CREATE TABLE policy_versions (
    version      INTEGER PRIMARY KEY,
    created_at   INTEGER NOT NULL,
    author       TEXT NOT NULL,
    comment      TEXT NOT NULL,
    digest       TEXT NOT NULL,
    files        TEXT NOT NULL,
    policy_count INTEGER NOT NULL,
    rollback_of  INTEGER
);

-- The singleton head: the active policy version (0: none yet), the entity
-- store's version and the newest bundle's version. Versions only grow.
CREATE TABLE policy_head (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    policy_version   INTEGER NOT NULL,
    entities_version INTEGER NOT NULL,
    bundle_version   INTEGER NOT NULL
);
INSERT INTO policy_head (id, policy_version, entities_version, bundle_version) VALUES (1, 0, 0, 0);

-- The entity store: one Cedar JSON entity per row, keyed by its UID.
CREATE TABLE policy_entities (
    type       TEXT NOT NULL,
    id         TEXT NOT NULL,
    data       TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (type, id)
);

-- The newest signed bundles (JSON of the wire form); older ones are pruned.
CREATE TABLE policy_bundles (
    version    INTEGER PRIMARY KEY,
    data       BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- The bundle-signing public keys of every replica, so that any replica can
-- serve a bundle another one signed and publish every key to verify it.
CREATE TABLE policy_signing_keys (
    key_id     TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
