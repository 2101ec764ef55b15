-- Silver against bronze per Convex table, key by key: expected_rows are the documents
-- whose newest event in the current snapshot walk (_batch >= walk_first_batch) is not a
-- delete ({{truncate_note}}); stale_rows are the keys where silver does not hold that newest event yet (a row
-- missing or older, a deleted row still there, or a row bronze's walk does not have). Zero
-- stale rows: the pipeline has applied everything bronze holds. Timestamps ending in _ts
-- are Convex timestamps (nanoseconds since the Unix epoch).
WITH walk AS (
  SELECT walk_first_batch FROM {{checkpoint}}
)
{{per_table}}
ORDER BY convex_table
