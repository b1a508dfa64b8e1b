-- The service directory: the control plane's catalog of services, used by
-- agents and gateways to resolve destinations. Times are Unix milliseconds.
-- endpoints and data_classes are JSON arrays of strings.
CREATE TABLE directory_services (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    endpoints    TEXT NOT NULL,
    owner        TEXT NOT NULL,
    data_classes TEXT NOT NULL,
    region       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
