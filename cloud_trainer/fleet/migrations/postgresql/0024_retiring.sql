-- Retention (cloud_trainer/fleet/store.py: RETIRED, the same table as fleet.db): the digests whose sample rows a
-- retention step deleted and whose bytes it has still to delete where no row names them; written with the rows'
-- deletion, taken off with the bytes', so that a stop or a kill between the two leaves no file for good.
CREATE TABLE IF NOT EXISTS retiring (tenant TEXT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (tenant, sha256));
