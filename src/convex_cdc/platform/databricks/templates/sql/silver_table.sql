
-- {{qualified}}: Convex table `{{table}}` of {{component_description}}
CREATE TEMPORARY VIEW {{view}} AS
SELECT
{{projection}},
  _deleted
FROM (
  SELECT
    _id,
    _ts,
    _deleted,
{{parsed}}
  FROM {{source}}
  WHERE _batch >= ${convex.first_batch}
);

CREATE OR REFRESH STREAMING TABLE {{target}}
  COMMENT {{comment}}{{table_properties}};

CREATE FLOW {{flow}} AS AUTO CDC INTO {{target}}
FROM STREAM({{view}})
KEYS (_id)
APPLY AS DELETE WHEN _deleted
SEQUENCE BY _ts
COLUMNS * EXCEPT ({{except_columns}})
STORED AS SCD TYPE {{scd_type}};
