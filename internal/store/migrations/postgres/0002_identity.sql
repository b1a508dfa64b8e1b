-- The identity provider: signing keys, clients, users, and the short-lived
-- state of OAuth flows. Times are Unix milliseconds. Secrets (codes,
-- request URIs, refresh tokens, login sessions) are stored only as their
-- SHA-256 (hex); private keys and TOTP seeds only sealed.

-- Token signing keys. A key is published at publish_at, signs from
-- activate_at until retire_at, and leaves the JWKS at remove_at (after every
-- token it signed has expired).
CREATE TABLE identity_signing_keys (
    kid            TEXT PRIMARY KEY,
    alg            TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    sealed_private BYTEA NOT NULL,
    created_at     BIGINT NOT NULL,
    publish_at     BIGINT NOT NULL,
    activate_at    BIGINT NOT NULL,
    retire_at      BIGINT,
    remove_at      BIGINT
);

-- Registered clients; metadata is the client's registration (JSON).
CREATE TABLE identity_clients (
    client_id   TEXT PRIMARY KEY,
    metadata    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    disabled_at BIGINT
);

-- Local users. password_hash is an argon2id PHC string.
CREATE TABLE identity_users (
    user_id         TEXT PRIMARY KEY,
    username        TEXT NOT NULL UNIQUE,
    password_hash   TEXT NOT NULL,
    email           TEXT NOT NULL DEFAULT '',
    name            TEXT NOT NULL DEFAULT '',
    totp_sealed     BYTEA,
    totp_last_step  BIGINT NOT NULL DEFAULT 0,
    failed_logins   INTEGER NOT NULL DEFAULT 0,
    last_failure_at BIGINT NOT NULL DEFAULT 0,
    locked_until    BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    disabled_at     BIGINT
);

-- Pushed authorization requests (RFC 9126): single-use, short-lived.
CREATE TABLE identity_par (
    request_hash TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL,
    params       TEXT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);

-- Logins in progress: from the authorization request to consent.
CREATE TABLE identity_login_sessions (
    session_hash TEXT PRIMARY KEY,
    client_id    TEXT NOT NULL,
    request      TEXT NOT NULL,
    csrf_hash    TEXT NOT NULL,
    stage        TEXT NOT NULL,
    user_id      TEXT NOT NULL DEFAULT '',
    auth_time    BIGINT NOT NULL DEFAULT 0,
    amr          TEXT NOT NULL DEFAULT '',
    expires_at   BIGINT NOT NULL
);

-- A grant: what a user (or the client itself) granted a client. Codes,
-- refresh tokens and access tokens hang off it; revoking it revokes them.
CREATE TABLE identity_grants (
    grant_id   TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    scope      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX identity_grants_client ON identity_grants (client_id);

-- Authorization codes: single-use, at most 60 s.
CREATE TABLE identity_codes (
    code_hash  TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    data       TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

-- Refresh tokens. A rotating family shares grant_id; used_at marks a
-- rotated token, whose reuse revokes the grant.
CREATE TABLE identity_refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL,
    client_id  TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX identity_refresh_tokens_grant ON identity_refresh_tokens (grant_id);

-- Access tokens issued under a grant, so that revoking the grant revokes
-- them (client-credentials tokens are not recorded).
CREATE TABLE identity_access_tokens (
    jti        TEXT PRIMARY KEY,
    grant_id   TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX identity_access_tokens_grant ON identity_access_tokens (grant_id);

-- The revocation feed: revoked access-token IDs in the order they were
-- revoked. Verifiers poll it by seq.
CREATE TABLE identity_revocations (
    seq        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    jti        TEXT NOT NULL UNIQUE,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL,
    reason     TEXT NOT NULL
);

-- Single-use identifiers: client-assertion and DPoP-proof jti values, kept
-- until they could no longer be accepted anyway.
CREATE TABLE identity_replay (
    namespace  TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (namespace, jti)
);
CREATE INDEX identity_replay_expiry ON identity_replay (expires_at);
