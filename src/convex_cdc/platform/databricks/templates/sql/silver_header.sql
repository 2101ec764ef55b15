-- {{generated}}
-- Silver current-state tables for Convex, as a Lakeflow pipeline source (SQL).
-- One AUTO CDC flow per table: KEYS (_id), APPLY AS DELETE WHEN _deleted,
-- STORED AS SCD TYPE {{scd_type}}.
{{truncate_help}}
-- Source: {{source_description}}
--
-- Pipeline configuration used here:
{{configuration_help}}
--
-- Tables: exactly the {{table_count}} rendered below. convex.tables is not read here (SQL cannot
-- declare tables conditionally); the Python source builds the tables it lists. To build
-- other tables with this file, render again with --tables.
--
{{typed_columns_help}}
