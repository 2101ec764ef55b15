"""A local, faithful emulator of Convex's streaming-export HTTP API.

The API it reproduces is summarised in docs/convex-export-api.md.

Start with :class:`convex_cdc.devserver.server.DevServer` (or ``convex-cdc devserver``).
Modules, one concept each: ``ids`` (document and tablet ids), ``value_encoding`` (the five
``format`` names), ``tables``/``transaction``/``store`` (the MVCC document store and its
log), ``schema_inference`` (``json_schemas`` and column names), ``selection``,
``request_args``, ``auth``, ``api_errors``, ``export_api`` (the endpoints), ``http_api``
(routing and the order of checks), ``devserver_api`` (write/truth/settings/workload
endpoints), ``faults``, ``settings`` and ``server`` (the HTTP server).

Not emulated: the Data Sync API (``/api/v1/data/sync`` and the cursor conversion answer 501
``NotImplemented``; ``list_active_syncs`` lists nothing), ``OperationNotPermitted`` (every
valid key has ``deployment:data:view``), ``TableSummariesUnavailable`` (shapes are always
ready), the 60 s page time limit and the 300 s request timeout, replace-imports, and the
declared-schema fallback of ``json_schemas``. Dropping a table exists in the store
(``DocumentStore.drop_table``, used by in-process tests), not yet over HTTP. Details are in each
module's docstring.
"""
