
-- {{qualified}}: Convex table `{{table}}` of {{component_description}}
CREATE TEMPORARY VIEW {{view}} AS
SELECT
{{projection}},
  _deleted,
  _op,
  _batch
FROM (
  SELECT
    _id,
    _ts,
    _deleted,
    _op,
    _batch,
{{parsed}}
  FROM {{source}}
  WHERE _batch >= ${convex.first_batch}{{source_filter}}
);

CREATE OR REFRESH STREAMING TABLE {{target}}
  COMMENT {{comment}}{{table_properties}};

CREATE FLOW {{flow}} AS AUTO CDC INTO {{target}}
FROM STREAM({{view}})
KEYS (_id)
APPLY AS DELETE WHEN _deleted{{apply_as_truncate}}
SEQUENCE BY {{sequence_by}}
COLUMNS * EXCEPT ({{except_columns}})
STORED AS SCD TYPE {{scd_type}};
