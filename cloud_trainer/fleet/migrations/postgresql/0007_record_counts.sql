-- Per agent, epoch and kind: how many records are stored and their lowest and highest seq, kept by ingest in the
-- batch's transaction (cloud_trainer/fleet/store.py: RECORD_COUNTS, the same table as fleet.db), so that stats and
-- gaps need not read every record row; filled from the records already stored.
CREATE TABLE record_counts (tenant TEXT NOT NULL, agent TEXT NOT NULL, epoch BIGINT NOT NULL, kind TEXT NOT NULL,
  records BIGINT NOT NULL, first_seq BIGINT NOT NULL, last_seq BIGINT NOT NULL, PRIMARY KEY (tenant, agent, epoch, kind));
INSERT INTO record_counts (tenant, agent, epoch, kind, records, first_seq, last_seq)
  SELECT tenant, agent, epoch, kind, COUNT(*), MIN(seq), MAX(seq) FROM records GROUP BY tenant, agent, epoch, kind;
