"""Stage 1 of the S3/export target: the append-only raw change log (one parquet file per
table per batch, plus a batch index), written by :class:`~.change_log.RawChangeLogSink`."""
