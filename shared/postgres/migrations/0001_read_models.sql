-- The read models, with the keys, ordering and paging of the DynamoDB and SQLite adapters:
-- a view per entity (its version, lookup keys and list sort keys), history entries keyed by
-- `h#<occurred_at>#<version>`, and parked entities. A migration that has run is never
-- edited: a change is a new file (the runner refuses a database whose applied migration
-- differs from the file).

CREATE TABLE views (
    pk          text PRIMARY KEY,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    version     bigint NOT NULL,
    view        jsonb NOT NULL,
    status_family text NOT NULL,
    status_key  text NOT NULL,
    rider_key   text,
    driver_key  text,
    created_sk  text NOT NULL,
    updated_sk  text NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

-- The lists: by rider and driver newest first by creation, by status newest first by update;
-- the pk breaks ties so paging is total.
CREATE INDEX views_by_rider ON views (rider_key, created_sk DESC, pk DESC) WHERE rider_key IS NOT NULL;
CREATE INDEX views_by_driver ON views (driver_key, created_sk DESC, pk DESC) WHERE driver_key IS NOT NULL;
CREATE INDEX views_by_status ON views (status_key, updated_sk DESC, pk DESC);

CREATE TABLE history (
    pk    text NOT NULL,
    sk    text NOT NULL,
    entry jsonb NOT NULL,
    PRIMARY KEY (pk, sk)
);

CREATE TABLE parked (
    entity    text PRIMARY KEY,
    parked_at text NOT NULL,
    entry     jsonb NOT NULL
);
