-- {{generated}}
-- Register the tables convex-cdc publishes to {{published}} as Unity Catalog EXTERNAL tables.
-- Each published table is a Delta table at staging/<table-dir>/ whose files are exactly the
-- current manifest's: queries read the current state (deletes applied, typed), switched
-- atomically by each publish, and the schema follows the Delta log as publish evolves it.
-- `convex-cdc publish` is the only writer: do not VACUUM, OPTIMIZE or write to them here.
-- Needs an external location covering {{published}} with READ FILES and CREATE EXTERNAL TABLE.
CREATE SCHEMA IF NOT EXISTS {{schema}};
