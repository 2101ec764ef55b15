"""Run the ``convex-cdc`` CLI in this process and record what the command reported.

    python bench/cli_probe.py OUT.json sync --dest DIR ...

Exactly ``python -m convex_cdc <args>``, plus two kinds of hooks whose cost is one
Python call per page or per command:

* ``ConvexClient.list_snapshot`` / ``document_deltas`` are wrapped to count the documents
  and response bytes received from the server (the same figures ``SyncReport`` keeps, but
  also available for ``databricks extract``, whose CLI does not print bytes);
* the command's step function (``sync_step``, ``materialize_step``, ``publish_step``, the
  Databricks ``extract`` and ``apply_silver``) is wrapped to keep the report it returns,
  so the benchmark reads numbers, not the CLI's wording.

``OUT.json`` is written when the command ends, also when it fails.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

_SCALARS = (int, float, str, bool, type(None))

# (module, attribute, figures to keep from the returned report)
_STEP_HOOKS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "sync": (
        "convex_cdc.commands.sync",
        "sync_step",
        ("events", "deletes", "batches", "snapshot_pages", "delta_pages", "response_bytes"),
    ),
    "materialize": (
        "convex_cdc.commands.materialize",
        "materialize_step",
        (
            "batches_applied",
            "rows_upserted",
            "rows_deleted",
            "files_written",
            "files_removed",
            "full_rebuild",
        ),
    ),
    "publish": (
        "convex_cdc.commands.publish",
        "publish_step",
        (
            "files_uploaded",
            "files_skipped",
            "bytes_uploaded",
            "files_deleted",
            "sequence",
            "delta_commits",
        ),
    ),
    "databricks extract": (
        "convex_cdc.platform.databricks.extractor",
        "extract",
        ("bronze_commits", "bronze_rows", "skipped_appends"),
    ),
    "databricks apply-silver": (
        "convex_cdc.platform.databricks.silver",
        "apply_silver",
        ("rows_read", "snapshot_complete"),
    ),
}


def _figures(report: Any, names: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in (*names, "elapsed_seconds"):
        if not hasattr(report, name):
            continue  # e.g. an extract result keeps its time in the nested SyncReport
        value = getattr(report, name)
        if isinstance(value, _SCALARS):
            out[name] = value
    nested = getattr(report, "sync", None)  # extract's result wraps a SyncReport
    if nested is not None:
        out["sync"] = _figures(nested, _STEP_HOOKS["sync"][2])
    tables = getattr(report, "tables", None)
    if isinstance(tables, list | set):
        out["tables"] = len(tables)
    return out


def _hook_reads(record: dict[str, Any]) -> None:
    from convex_cdc.core.client import ConvexClient

    reads = record.setdefault("reads", {"pages": 0, "rows": 0, "response_bytes": 0})

    def counting(method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            page = method(*args, **kwargs)
            reads["pages"] += 1
            reads["rows"] += len(page.values)
            reads["response_bytes"] += page.response_bytes
            return page

        return wrapper

    for name in ("list_snapshot", "document_deltas"):
        setattr(ConvexClient, name, counting(getattr(ConvexClient, name)))


def _hook_step(record: dict[str, Any], command: str) -> None:
    hook = _STEP_HOOKS.get(command)
    if hook is None:
        return
    module_name, attribute, names = hook
    module = importlib.import_module(module_name)
    original = getattr(module, attribute, None)
    if original is None:
        record["hook_error"] = f"{module_name}.{attribute} not found"
        return

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        report = original(*args, **kwargs)
        record["report"] = _figures(report, names)
        return report

    setattr(module, attribute, wrapper)


def _command(args: Sequence[str]) -> str:
    words = [a for a in args if not a.startswith("-")]
    if words[:1] == ["databricks"]:
        return " ".join(words[:2])
    return words[0] if words else ""


def main() -> None:
    """Install the hooks, run the CLI with the remaining arguments, write the record."""
    out = Path(sys.argv[1])
    args = sys.argv[2:]
    record: dict[str, Any] = {"command": _command(args)}
    _hook_reads(record)
    _hook_step(record, record["command"])
    sys.argv = ["convex-cdc", *args]
    try:
        from convex_cdc.cli import main as cli_main

        cli_main()
    finally:
        out.write_text(json.dumps(record))


if __name__ == "__main__":
    main()
