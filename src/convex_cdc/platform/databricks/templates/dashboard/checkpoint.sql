-- The latest checkpoint of source {{source_name}}, and how far the landed data is behind
-- the source. Convex timestamps (consistent_as_of, _ts) are nanoseconds since the Unix
-- epoch; DIV 1000 turns them into the microseconds timestamp_micros and unix_micros use.
-- consistent_as_of is NULL while a snapshot walk is in progress (phase = 'snapshot', or
-- a Data Sync whose sync_status is 'snapshotting'). api says which Convex API the source
-- is followed with (NULL in rows saved before Data Sync support: streaming-export).
SELECT
  latest.source,
  latest.deployment_url,
  latest.phase,
  latest.batch_seq,
  batch.committed_at AS batch_committed_at,
  latest.pending_batch_seq,
  latest.walk_first_batch,
  latest.save_seq,
  latest.reason,
  coalesce(latest.api, 'streaming-export') AS api,
  latest.sync_status,
  latest.sync_id,
  latest.consistent_as_of,
  timestamp_micros(latest.consistent_as_of DIV 1000) AS consistent_as_of_at,
  latest.updated_at AS saved_at,
  current_timestamp() AS checked_at,
  (unix_micros(current_timestamp()) - latest.consistent_as_of DIV 1000) / 1e6 AS lag_seconds,
  (unix_micros(current_timestamp()) - latest.consistent_as_of DIV 1000) / 6e7 AS lag_minutes,
  (unix_micros(latest.updated_at) - latest.consistent_as_of DIV 1000) / 1e6
    AS lag_at_save_seconds,
  (unix_micros(current_timestamp()) - unix_micros(latest.updated_at)) / 6e7
    AS minutes_since_save
FROM {{checkpoint}} AS latest
LEFT JOIN (
  -- A batch is committed when its number is first saved (after all its bronze commits).
  SELECT batch_seq, min(updated_at) AS committed_at
  FROM {{checkpoints}}
  WHERE source = {{source}} AND batch_seq > 0
  GROUP BY batch_seq
) AS batch
  ON batch.batch_seq = latest.batch_seq
