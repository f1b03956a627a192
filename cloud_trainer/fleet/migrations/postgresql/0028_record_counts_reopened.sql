-- An epoch retention emptied has first_received 'Infinity' (no record left: passes walk record_counts_by_age by
-- it). A service of before 0025 (a replica during a rolling upgrade, a rollback) counting a record into it again
-- leaves that column as it was, so no pass read the epoch again: its records were kept past the age for good. Such
-- an update marks the age not known (0), read by the next pass (cloud_trainer/fleet/store.py: RECORD_COUNTS_REOPENED,
-- the same for fleet.db). Ours never matches (its upsert sets LEAST(first_received, receipt); retention's Infinity
-- comes with records 0), and the WHEN is judged without calling the function. Rows left so before it are marked too.
CREATE OR REPLACE FUNCTION record_counts_reopened() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.first_received := 0;
  RETURN NEW;
END
$$;
DROP TRIGGER IF EXISTS record_counts_reopened ON record_counts;
CREATE TRIGGER record_counts_reopened BEFORE UPDATE OF records ON record_counts FOR EACH ROW
  WHEN (NEW.records > 0 AND NEW.first_received = 'Infinity') EXECUTE FUNCTION record_counts_reopened();
UPDATE record_counts SET first_received = 0 WHERE first_received = 'Infinity' AND records > 0;
