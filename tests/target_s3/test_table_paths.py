"""Hostile table and component names never become paths outside the destination."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from convex_cdc.core.errors import TargetError
from convex_cdc.core.names import TableKey
from convex_cdc.target_s3.table_paths import resolve_table_dir, table_dir_name


@pytest.mark.parametrize(
    ("component", "table", "expected"),
    [
        ("", "messages", "messages"),
        ("waitlist", "entries", "waitlist.entries"),
        ("waitlist/ratelimiter", "limits", "waitlist.ratelimiter.limits"),
        ("_internal", "jobs", "_internal.jobs"),
    ],
)
def test_directory_name_is_the_table_or_the_dotted_component_path(
    component: str, table: str, expected: str
) -> None:
    assert table_dir_name(TableKey(component, table)) == expected


def test_root_and_component_tables_never_share_a_directory() -> None:
    names = {
        table_dir_name(TableKey(component, table))
        for component, table in [("", "a"), ("a", "b"), ("a/b", "c"), ("", "b"), ("b", "a")]
    }
    assert len(names) == 5


HOSTILE_TABLES = [
    "../x",
    "/abs",
    "a/../../b",
    "a\x00b",
    "\x00",
    ".",
    "..",
    "x" * 300,
    "m\u0435ssages",  # Cyrillic "e" lookalike
    "\uff4dessages",  # fullwidth "m"
    "a\\b",
    "a b",
    "",
    "_system",
    "a.b",
]


@pytest.mark.parametrize("table", HOSTILE_TABLES, ids=repr)
def test_hostile_table_names_are_refused_and_nothing_is_created(tmp_path: Path, table: str) -> None:
    root = tmp_path / "raw_change_log"
    with pytest.raises(TargetError, match="refusing"):
        resolve_table_dir(root, TableKey("", table))
    assert not root.exists()


@pytest.mark.parametrize(
    "component",
    ["../../etc", "/etc", "a//b", "a/", "..", ".", "a/../b", "x\x00", "c\u043emp"],
    ids=repr,
)
def test_hostile_component_paths_are_refused(tmp_path: Path, component: str) -> None:
    with pytest.raises(TargetError, match="refusing component path"):
        resolve_table_dir(tmp_path, TableKey(component, "messages"))
    assert list(tmp_path.iterdir()) == []


def test_a_directory_name_over_255_bytes_is_refused(tmp_path: Path) -> None:
    component = "/".join(["c" * 64] * 4)  # every segment is a valid identifier
    with pytest.raises(TargetError, match="255-byte"):
        resolve_table_dir(tmp_path, TableKey(component, "messages"))


def test_names_the_destination_reserves_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="reserved"):
        resolve_table_dir(tmp_path, TableKey("_state", "json"))


def test_a_symlink_planted_in_the_destination_is_not_followed_outside(tmp_path: Path) -> None:
    root = tmp_path / "staging"
    root.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.symlink(outside, root / "messages")
    with pytest.raises(TargetError, match="outside"):
        resolve_table_dir(root, TableKey("", "messages"))


def test_a_valid_name_resolves_inside_the_root_without_creating_it(tmp_path: Path) -> None:
    path = resolve_table_dir(tmp_path / "raw", TableKey("waitlist", "entries"))
    assert path == tmp_path / "raw" / "waitlist.entries"
    assert not path.exists()
