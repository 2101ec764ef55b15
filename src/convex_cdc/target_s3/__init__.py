"""The S3/export target: Convex → raw change log → staging → publish.

::

    target_s3/
      layout.py  table_paths.py  checkpoint_file.py  locks.py  atomic_file.py
      raw/        stage 1: append-only raw change log (the sink the orchestrator writes)
      staging/    stage 2: current state per table, built incrementally from raw
      publish/    stage 3: object-store copy of staging with a manifest written last

Each stage reads only what the stage before it made durable, and each command builds
one :class:`~convex_cdc.target_s3.layout.DestinationLayout` and hands it down.
"""
