-- {{generated}}
-- Register the convex-cdc bronze CDC tables of source {{source_name}} as Unity Catalog EXTERNAL tables.
-- The extractor (delta-rs) is the only writer of these Delta tables; Databricks reads them.
-- Do not enable liquid clustering, row tracking, type widening or other table features on
-- them, and do not run DELETE/UPDATE/OPTIMIZE from Databricks: delta-rs could no longer append.
-- Needs an external location covering {{location}} and CREATE EXTERNAL TABLE on it.
CREATE SCHEMA IF NOT EXISTS {{schema}};

-- The control table: one row per checkpoint save (latest save_seq wins).
CREATE TABLE IF NOT EXISTS {{schema}}.`convex_cdc_checkpoints`
  USING DELTA LOCATION {{checkpoints_location}};

-- One source per schema: if the schema already registered another source's control table,
-- CREATE TABLE IF NOT EXISTS kept that one, and so would every bronze table below. Stop.
SELECT assert_true(
  count(*) = 0,
  {{guard_message}}
) AS `one_source_per_schema`
FROM {{schema}}.`convex_cdc_checkpoints`
WHERE source <> {{source_literal}};

-- The latest checkpoint of source {{source_name}}.
CREATE OR REPLACE VIEW {{schema}}.`convex_cdc_checkpoint` AS
SELECT * FROM {{schema}}.`convex_cdc_checkpoints`
WHERE source = {{source_literal}}
ORDER BY save_seq DESC
LIMIT 1;

-- The typed-column spec log the silver pipeline was rendered from.
CREATE TABLE IF NOT EXISTS {{schema}}.`convex_cdc_table_specs`
  USING DELTA LOCATION {{specs_location}};

-- One append-only CDC table per Convex table (_id, _ts ns, _deleted, _op, _batch, document JSON...).
