"""Stage 2 of the S3/export target: current-state staging tables built incrementally from
the raw change log by :class:`~.materializer.StagingMaterializer`, and ``verify``."""
