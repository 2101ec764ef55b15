"""The manifest's JSON shape, strict decoding and content identity."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.core.columns import ColumnSpec, Widening
from convex_cdc.core.type_mapping import ColumnType
from convex_cdc.target_s3.publish.manifest import (
    Manifest,
    ManifestFile,
    ManifestFormatError,
    ManifestTable,
    content_identity,
    dumps_manifest,
    loads_manifest,
    manifest_from_json,
    manifest_to_json,
    numbered_path,
    sequence_of,
)

SHA = "0123456789abcdef" * 4


def example() -> Manifest:
    return Manifest(
        sequence=17,
        published_at="2026-11-26T10:00:00Z",
        deployment_url="https://happy-animal-123.convex.cloud",
        consistent_as_of_ts=1764151200000000000,
        tables=(
            ManifestTable(
                component="",
                table="messages",
                row_count=3,
                schema_fingerprint="sha256:" + "ab" * 32,
                columns=(
                    ColumnSpec("_id", ColumnType.STRING, nullable=False),
                    ColumnSpec("score", ColumnType.JSON),
                ),
                files=(ManifestFile("staging/messages/part-0000-aa.parquet", 3, 1234, SHA),),
                widenings=(Widening("score", ColumnType.INT64, ColumnType.JSON, 42),),
            ),
        ),
    )


def test_the_json_has_exactly_the_documented_shape() -> None:
    data = manifest_to_json(example())
    assert data == {
        "format": "convex-cdc.manifest",
        "version": 1,
        "sequence": 17,
        "published_at": "2026-11-26T10:00:00Z",
        "source": {"deployment_url": "https://happy-animal-123.convex.cloud"},
        "consistent_as_of_ts": 1764151200000000000,
        "tables": [
            {
                "component": "",
                "table": "messages",
                "row_count": 3,
                "schema_fingerprint": "sha256:" + "ab" * 32,
                "columns": [
                    {"name": "_id", "type": "string", "nullable": False},
                    {"name": "score", "type": "json", "nullable": True},
                ],
                "files": [
                    {
                        "path": "staging/messages/part-0000-aa.parquet",
                        "rows": 3,
                        "bytes": 1234,
                        "sha256": SHA,
                    }
                ],
                "widenings": [{"column": "score", "from": "int64", "to": "json", "batch": 42}],
            }
        ],
    }
    with_raw = replace(example(), raw_change_log=(ManifestFile("raw_change_log/m/b", 1, 2, SHA),))
    assert manifest_to_json(with_raw)["raw_change_log"] == {
        "files": [{"path": "raw_change_log/m/b", "rows": 1, "bytes": 2, "sha256": SHA}]
    }


def test_stored_bytes_read_back_to_the_same_manifest() -> None:
    manifest = replace(example(), raw_change_log=())
    assert loads_manifest(dumps_manifest(manifest), where="m") == manifest
    assert loads_manifest(dumps_manifest(example()), where="m") == example()


def test_identity_ignores_sequence_and_time_but_not_content() -> None:
    base = example()
    later = replace(base, sequence=18, published_at="2027-01-01T00:00:00Z")
    assert content_identity(later) == content_identity(base)
    table = base.tables[0]
    changed_file = replace(table, files=(replace(table.files[0], sha256="f" * 64),))
    assert content_identity(replace(base, tables=(changed_file,))) != content_identity(base)
    assert content_identity(replace(base, consistent_as_of_ts=1)) != content_identity(base)
    assert content_identity(replace(base, raw_change_log=())) != content_identity(base)


def _mutated(change: Any) -> dict[str, Any]:
    data = manifest_to_json(example())
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda d: d.update(version=2), "version 2.*upgrade convex-cdc"),
        (lambda d: d.update(version="1"), "manifest version '1'"),
        (lambda d: d.update(format="other"), "not a convex-cdc manifest"),
        (lambda d: d.update(extra=1), r"unknown fields \['extra'\]"),
        (lambda d: d.pop("consistent_as_of_ts"), "missing field 'consistent_as_of_ts'"),
        (lambda d: d["tables"][0].update(row_count=-1), "row_count must be a non-negative"),
        (lambda d: d["tables"][0]["columns"][0].update(type="decimal"), "decimal"),
        (lambda d: d["tables"][0]["files"][0].update(path="../../etc/passwd"), "plain relative"),
        (lambda d: d["tables"][0]["files"][0].update(path="/abs/x"), "plain relative"),
        (lambda d: d["tables"][0]["files"][0].update(sha256="XYZ"), "hex digest"),
    ],
)
def test_decoding_is_strict(change: Any, match: str) -> None:
    with pytest.raises(ManifestFormatError, match=match):
        manifest_from_json(_mutated(change), where="s3://lake/manifest.json")


def test_corrupt_bytes_are_a_manifest_error() -> None:
    with pytest.raises(ManifestFormatError, match="not JSON"):
        loads_manifest(b"{not json", where="manifest.json")


def test_numbered_paths_round_trip() -> None:
    assert numbered_path(17) == "manifests/000000000017.json"
    assert sequence_of(numbered_path(17)) == 17
    assert sequence_of("manifests/latest.json") is None
    assert sequence_of("manifest.json") is None


_names = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
_files = st.builds(
    ManifestFile,
    path=st.builds(lambda d, n: f"staging/{d}/{n}.parquet", _names, _names),
    rows=st.integers(0, 10**9),
    bytes=st.integers(0, 10**12),
    sha256=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
)
_tables = st.builds(
    ManifestTable,
    component=st.sampled_from(["", "waitlist", "a/b"]),
    table=_names,
    row_count=st.integers(0, 10**9),
    schema_fingerprint=st.none() | st.just("sha256:" + "0" * 64),
    columns=st.lists(
        st.builds(ColumnSpec, _names, st.sampled_from(list(ColumnType)), st.booleans()),
        max_size=4,
    ).map(tuple),
    files=st.lists(_files, max_size=3).map(tuple),
    widenings=st.lists(
        st.builds(
            Widening,
            _names,
            st.sampled_from(list(ColumnType)),
            st.just(ColumnType.JSON),
            st.integers(0, 99),
        ),
        max_size=2,
    ).map(tuple),
)


@settings(max_examples=40, deadline=None)
@given(
    tables=st.lists(_tables, max_size=3).map(tuple),
    raw=st.none() | st.lists(_files, max_size=2).map(tuple),
    sequence=st.integers(1, 10**6),
    ts=st.integers(0, 2**63 - 1),
)
def test_any_manifest_survives_a_round_trip(
    tables: tuple[ManifestTable, ...], raw: tuple[ManifestFile, ...] | None, sequence: int, ts: int
) -> None:
    manifest = Manifest(sequence, "2026-11-26T10:00:00Z", "https://x.convex.cloud", ts, tables, raw)
    decoded = loads_manifest(json.dumps(manifest_to_json(manifest)).encode(), where="m")
    assert decoded == manifest
    assert content_identity(decoded) == content_identity(manifest)
