"""A local, faithful emulator of Convex's streaming-export HTTP API.

The API it reproduces is summarised in docs/convex-export-api.md.

Start with :class:`convex_cdc.devserver.server.DevServer` (or ``convex-cdc devserver``).
Modules, one concept each: ``ids`` (document and tablet ids), ``value_encoding`` (the five
``format`` names), ``tables``/``transaction``/``store`` (the MVCC document store and its
log), ``schema_inference`` (``json_schemas`` and column names), ``selection``,
``request_args``, ``auth``, ``api_errors``, ``export_api`` (the legacy endpoints),
``data_sync`` (the Data Sync iterator), ``sync_cursor`` (its sealed cursor),
``sync_progress`` (``list_active_syncs``), ``data_sync_api`` (the Data Sync endpoints),
``http_api`` (routing and the order of checks), ``devserver_api`` (write, drop, replace,
truth, settings and workload endpoints), ``faults``, ``settings`` and ``server`` (the HTTP
server).

Not emulated: ``OperationNotPermitted`` (every valid key has ``deployment:data:view``),
``TableSummariesUnavailable`` (shapes are always ready), the 60 s page time limit and the
300 s request timeout, the hidden tablet of an import in progress (a replace-import is one
atomic step), and the declared-schema fallback of ``json_schemas``. Details are in each
module's docstring.
"""
