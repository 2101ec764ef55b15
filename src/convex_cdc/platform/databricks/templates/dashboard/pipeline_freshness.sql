-- How far the newest change silver holds is behind the checkpoint, in Convex time
-- (timestamps are nanoseconds since the Unix epoch). Large while silver has stale rows:
-- the pipeline is behind. Large with no stale rows: the deployment has not changed since
-- (the checkpoint moves on without changes).
SELECT
  silver.last_ts AS silver_last_ts,
  timestamp_micros(silver.last_ts DIV 1000) AS silver_last_change_at,
  checkpoint.consistent_as_of,
  (checkpoint.consistent_as_of - silver.last_ts) / 6e10 AS silver_behind_checkpoint_minutes
FROM (
  SELECT max(last_ts) AS last_ts
  FROM (
{{silver_last_ts}}
  ) AS newest
) AS silver
LEFT JOIN {{checkpoint}} AS checkpoint ON true
