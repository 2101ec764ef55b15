"""Export_json documents in bulk: parsed at once, then split into one value list per field.

Building typed columns value by value (a Python call per value) costs far more than the
parsing itself, so :mod:`.type_mapping` works on whole columns: :func:`parse_documents`
parses a batch of document texts, :func:`field_columns` turns the documents into
``{field: [value per document]}``, and the column functions look at each list as a whole.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain, repeat
from typing import Any, Final

import orjson

_NO_FIELDS: Final[Mapping[str, Any]] = {}
"""Stands in for a delete, so every document is a dict (see :func:`field_values`)."""


class _CollectorPause:
    """How many threads are inside :func:`paused_gc`, and whether to re-enable after."""

    lock = threading.Lock()
    depth = 0
    was_enabled = False


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while bulk-parsed documents are alive.

    Parsed JSON holds no reference cycles (reference counting frees it), but allocating
    millions of dicts and lists triggers collections that traverse every one of them,
    which costs several times the parsing itself. Nests and works across threads: the
    collector is re-enabled (if it was enabled) when the last pause ends.
    """
    with _CollectorPause.lock:
        if _CollectorPause.depth == 0:
            _CollectorPause.was_enabled = gc.isenabled()
            gc.disable()
        _CollectorPause.depth += 1
    try:
        yield
    finally:
        with _CollectorPause.lock:
            _CollectorPause.depth -= 1
            if _CollectorPause.depth == 0 and _CollectorPause.was_enabled:
                gc.enable()


def parse_documents(texts: Iterable[str | bytes | None]) -> list[Any]:
    """``orjson.loads`` of every text (``None`` stays ``None``), with :func:`paused_gc`.

    Raises:
        orjson.JSONDecodeError: a text is not JSON.
    """
    loads = orjson.loads
    with paused_gc():
        return [None if text is None else loads(text) for text in texts]


def field_columns(documents: Sequence[Mapping[str, Any] | None]) -> dict[str, list[Any]]:
    """Every field's values (system fields too), by name in order of first appearance.

    ``result[name][i]`` is ``documents[i][name]``, or ``None`` if missing or a delete.
    """
    rows = [_NO_FIELDS if document is None else document for document in documents]
    names = dict.fromkeys(chain.from_iterable(rows))
    return {name: field_values(rows, name) for name in names}


def field_values(documents: Sequence[Mapping[str, Any] | None], name: str) -> list[Any]:
    """``documents[i][name]`` for every document (``None`` if missing or a delete)."""
    try:
        # map over dict.get runs without a Python frame per document.
        return list(map(dict.get, documents, repeat(name)))  # type: ignore[arg-type]
    except TypeError:  # a delete (None) or a Mapping that is not a dict
        return [None if document is None else document.get(name) for document in documents]
