-- Bronze per Convex table: every change event the extractor landed (all snapshot walks),
-- the deletes among them, and the newest change. last_change_ts is a Convex timestamp
-- (nanoseconds since the Unix epoch); last_extracted_at is when the extractor received it.
{{per_table}}
ORDER BY convex_table
