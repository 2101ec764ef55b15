-- Columns the extractor widened to JSON text after they had a scalar type: the spec log
-- holds a scalar type (string, int64, float64, bool, binary) for the column in one row and
-- json in another. A pipeline rendered before the widening reads NULL for the column's new
-- values; render again, deploy, and run a full refresh. A field that was JSON from its
-- first typed row, or only ever null before, never had a scalar column and is not listed.
WITH spec_columns AS (
  SELECT specs.component, specs.`table`, specs.saved_at, typed.column_name, typed.column_type
  FROM {{table_specs}} AS specs
  LATERAL VIEW explode(from_json(specs.`columns`, 'MAP<STRING, STRING>')) typed
    AS column_name, column_type
)
SELECT
  CASE WHEN component = '' THEN `table` ELSE concat(component, '/', `table`) END
    AS convex_table,
  column_name,
  max_by(column_type, saved_at) FILTER (WHERE column_type NOT IN ('null', 'json'))
    AS type_before,
  min(saved_at) FILTER (WHERE column_type = 'json') AS widened_at
FROM spec_columns
GROUP BY component, `table`, column_name
HAVING count_if(column_type = 'json') > 0 AND count_if(column_type NOT IN ('null', 'json')) > 0
ORDER BY widened_at DESC, convex_table, column_name
