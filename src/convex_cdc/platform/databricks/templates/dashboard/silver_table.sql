SELECT
  {{convex_table}} AS convex_table,
  count(silver._id) AS silver_rows,
  count_if(NOT bronze.deleted) AS expected_rows,
  count_if(
    CASE
      WHEN bronze._id IS NULL THEN true
      WHEN bronze.deleted THEN silver._id IS NOT NULL
      ELSE silver._id IS NULL OR silver._ts <> bronze.last_ts
    END
  ) AS stale_rows,
  max(silver._ts) AS silver_last_ts,
  timestamp_micros(max(silver._ts) DIV 1000) AS silver_last_change_at,
  max(bronze.last_ts) AS bronze_last_ts,
  timestamp_micros(max(bronze.last_ts) DIV 1000) AS bronze_last_change_at
FROM (
  SELECT _id, max_by(_ts, {{sequence}}) AS last_ts, max_by(_deleted, {{sequence}}) AS deleted
  FROM {{bronze}}
  WHERE _batch >= (SELECT walk_first_batch FROM walk)
    AND _op NOT IN ('truncate', 'drop'){{since_truncate}}
  GROUP BY _id
) AS bronze
FULL OUTER JOIN (
  SELECT _id, _ts FROM {{silver}}{{current_rows}}
) AS silver
  ON silver._id = bronze._id
