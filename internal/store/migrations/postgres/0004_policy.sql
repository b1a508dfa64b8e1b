-- The policy repository: versioned Cedar policy sets, the entity store and
-- the signed bundles that carry both to enforcement points. Times are Unix
-- milliseconds. Every change is one transaction that locks policy_head.

-- Every policy set ever pushed, oldest first. A rollback is a new version
-- with an older version's files (rollback_of), so history stays linear.
-- files is a JSON object: file name -> Cedar text.
CREATE TABLE policy_versions (
    version      BIGINT PRIMARY KEY,
    created_at   BIGINT NOT NULL,
    author       TEXT NOT NULL,
    comment      TEXT NOT NULL,
    digest       TEXT NOT NULL,
    files        TEXT NOT NULL,
    policy_count BIGINT NOT NULL,
    rollback_of  BIGINT
);

-- The singleton head: the active policy version (0: none yet), the entity
-- store's version and the newest bundle's version. Versions only grow.
CREATE TABLE policy_head (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    policy_version   BIGINT NOT NULL,
    entities_version BIGINT NOT NULL,
    bundle_version   BIGINT NOT NULL
);
INSERT INTO policy_head (id, policy_version, entities_version, bundle_version) VALUES (1, 0, 0, 0);

-- The entity store: one Cedar JSON entity per row, keyed by its UID.
CREATE TABLE policy_entities (
    type       TEXT NOT NULL,
    id         TEXT NOT NULL,
    data       TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (type, id)
);

-- The newest signed bundles (JSON of the wire form); older ones are pruned.
CREATE TABLE policy_bundles (
    version    BIGINT PRIMARY KEY,
    data       BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);

-- The bundle-signing public keys of every replica, so that any replica can
-- serve a bundle another one signed and publish every key to verify it.
CREATE TABLE policy_signing_keys (
    key_id     TEXT PRIMARY KEY,
    public_key BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
