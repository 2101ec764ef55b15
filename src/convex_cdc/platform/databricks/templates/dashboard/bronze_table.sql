SELECT
  {{convex_table}} AS convex_table,
  count(*) AS change_events,
  count_if(_deleted) AS deletes,
  max(_batch) AS last_batch,
  max(_ts) AS last_change_ts,
  timestamp_micros(max(_ts) DIV 1000) AS last_change_at,
  max(_extracted_at) AS last_extracted_at
FROM {{bronze}}
