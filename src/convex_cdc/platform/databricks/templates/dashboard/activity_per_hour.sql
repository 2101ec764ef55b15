-- Extractor activity per hour over the last 7 days: checkpoint saves, committed batches
-- and the change events (and deletes among them) those batches landed in bronze. A batch
-- counts in the hour its number was first saved, which happens after all its bronze
-- commits; a save that only moved the cursor (nothing changed) adds no batch.
WITH committed AS (
  SELECT batch_seq, min(updated_at) AS committed_at
  FROM {{checkpoints}}
  WHERE source = {{source}} AND batch_seq > 0
  GROUP BY batch_seq
  HAVING min(updated_at) >= current_timestamp() - INTERVAL 7 DAYS
),
events AS (
  SELECT _batch, count(*) AS change_events, count_if(_deleted) AS deletes
  FROM (
{{bronze_batches}}
  ) AS bronze
  WHERE _batch >= (SELECT min(batch_seq) FROM committed)
  GROUP BY _batch
),
batches_per_hour AS (
  SELECT
    date_trunc('HOUR', committed.committed_at) AS hour,
    count(*) AS batches,
    coalesce(sum(events.change_events), 0) AS change_events,
    coalesce(sum(events.deletes), 0) AS deletes
  FROM committed
  LEFT JOIN events ON events._batch = committed.batch_seq
  GROUP BY date_trunc('HOUR', committed.committed_at)
),
saves_per_hour AS (
  SELECT date_trunc('HOUR', updated_at) AS hour, count(*) AS checkpoint_saves
  FROM {{checkpoints}}
  WHERE source = {{source}} AND updated_at >= current_timestamp() - INTERVAL 7 DAYS
  GROUP BY date_trunc('HOUR', updated_at)
)
SELECT
  saves_per_hour.hour,
  coalesce(batches_per_hour.batches, 0) AS batches,
  coalesce(batches_per_hour.change_events, 0) AS change_events,
  coalesce(batches_per_hour.deletes, 0) AS deletes,
  saves_per_hour.checkpoint_saves
FROM saves_per_hour
LEFT JOIN batches_per_hour ON batches_per_hour.hour = saves_per_hour.hour
ORDER BY saves_per_hour.hour
