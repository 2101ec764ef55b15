"""convex-cdc core: Convex extraction and checkpoint semantics.

Knows nothing about S3, Delta, Databricks or any other target. Targets implement
:class:`~convex_cdc.core.sink.Sink` and :class:`~convex_cdc.core.sink.CheckpointStore`
and receive :class:`~convex_cdc.core.events.ChangeBatch` objects.
"""
