"""Selection: patterns and config → the validated Convex selection object, and local checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.core.errors import ConfigError
from convex_cdc.core.names import TableKey
from convex_cdc.core.selection import Pattern, Selection, pattern_text, validate_selection

MESSAGES = TableKey("", "messages")
USERS = TableKey("", "users")
ENTRIES = TableKey("waitlist", "entries")
NESTED = TableKey("waitlist/ratelimiter", "buckets")


def test_no_patterns_select_everything() -> None:
    selection = Selection.from_patterns()
    assert selection.to_wire() == {"_other": "included"}
    assert selection.is_everything and selection == Selection.everything()
    assert selection.includes(MESSAGES) and selection.includes(NESTED)
    assert selection.includes_column(USERS, "ssn") and selection.excluded_columns(USERS) == set()


def test_including_root_tables_excludes_everything_else() -> None:
    selection = Selection.from_patterns(include=["messages", "users"])
    assert selection.to_wire() == {
        "_other": "excluded",
        "": {
            "_other": "excluded",
            "messages": {"_other": "included"},
            "users": {"_other": "included"},
        },
    }
    assert selection.includes(MESSAGES) and selection.includes(USERS)
    assert not selection.includes(TableKey("", "posts")) and not selection.includes(ENTRIES)


def test_a_star_includes_every_table_of_one_component_including_nested_ones() -> None:
    selection = Selection.from_patterns(include=["waitlist/*", "waitlist/ratelimiter/buckets"])
    assert selection.to_wire() == {
        "_other": "excluded",
        "waitlist": {"_other": "included"},
        "waitlist/ratelimiter": {"_other": "excluded", "buckets": {"_other": "included"}},
    }
    assert selection.includes(ENTRIES) and selection.includes(NESTED)
    assert not selection.includes(MESSAGES) and not selection.includes(
        TableKey("waitlist/ratelimiter", "x")
    )
    assert Selection.from_patterns(include=["*"]).includes(MESSAGES)
    assert not Selection.from_patterns(include=["*"]).includes(ENTRIES)


def test_naming_columns_narrows_a_table_to_them_plus_id_and_creation_time() -> None:
    selection = Selection.from_patterns(include=["users.email", "users.name"])
    assert selection.to_wire()[""]["users"] == {
        "_other": "excluded",
        "_creationTime": "included",
        "_id": "included",
        "email": "included",
        "name": "included",
    }
    assert selection.includes_column(USERS, "email") and selection.includes_column(USERS, "_id")
    assert not selection.includes_column(USERS, "ssn")
    assert not selection.includes_column(MESSAGES, "body")  # table not included at all


def test_excludes_apply_after_includes() -> None:
    selection = Selection.from_patterns(
        include=["*", "waitlist/*"],
        exclude=["messages", "users.ssn", "users._creationTime", "waitlist/entries.email"],
    )
    assert selection.to_wire() == {
        "_other": "excluded",
        "": {
            "_other": "included",
            "messages": "excluded",
            "users": {"_other": "included", "_creationTime": "excluded", "ssn": "excluded"},
        },
        "waitlist": {"_other": "included", "entries": {"_other": "included", "email": "excluded"}},
    }
    assert not selection.includes(MESSAGES) and selection.includes(USERS)
    assert selection.excluded_columns(USERS) == {"ssn", "_creationTime"}
    assert selection.excluded_columns(ENTRIES) == {"email"}
    assert selection.includes_column(USERS, "_id")


def test_excludes_alone_keep_everything_else() -> None:
    selection = Selection.from_patterns(exclude=["waitlist/*", "users.ssn"])
    assert selection.to_wire() == {
        "_other": "included",
        "waitlist": "excluded",
        "": {"_other": "included", "users": {"_other": "included", "ssn": "excluded"}},
    }
    assert (
        not selection.includes(ENTRIES)
        and selection.includes(NESTED)
        and selection.includes(MESSAGES)
    )


def test_excluding_what_was_never_included_changes_nothing() -> None:
    assert Selection.from_patterns(
        include=["messages"], exclude=["users", "wl/x.y", "posts.body"]
    ) == (Selection.from_patterns(include=["messages"]))


@pytest.mark.parametrize("pattern", ["users._id", "waitlist/entries._id"])
def test_id_can_never_be_excluded(pattern: str) -> None:
    with pytest.raises(ConfigError, match="excludes _id"):
        Selection.from_patterns(exclude=[pattern])


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        "a b",
        "../x",
        "/etc",
        "a//b",
        "users.",
        "users.a.b",
        "*.ssn",
        "_storage",
        "a\x00b",
        "x" * 300,
        "wl/",
        "9t",
        "t.$x",
    ],
)
def test_a_malformed_pattern_is_refused_naming_it(pattern: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Selection.from_patterns(include=[pattern])
    assert repr(pattern.strip())[:40].strip("'") in str(caught.value)
    assert "[component/]table[.column]" in (caught.value.hint or "")


def test_patterns_round_trip_through_their_text() -> None:
    for text in ("messages", "*", "waitlist/*", "a/b/t.col", "users.ssn"):
        assert pattern_text(Pattern.parse(text)) == text


def test_config_sections_take_patterns_or_a_full_object() -> None:
    from_patterns = Selection.from_config({"include": ["messages"], "exclude": ["messages.body"]})
    assert from_patterns == Selection.from_patterns(include=["messages"], exclude=["messages.body"])
    obj = {"_other": "excl", "": {"_other": "incl"}}
    assert Selection.from_config({"object": obj}).to_wire() == {
        "_other": "excluded",
        "": {"_other": "included"},
    }
    assert Selection.from_config({}) == Selection.everything()


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"includes": ["x"]}, "unknown keys"),
        ({"include": "messages"}, "must be a list"),
        ({"include": [1]}, "only strings"),
        ({"object": {"_other": "included"}, "include": ["x"]}, "both"),
        ({"object": {"": "included"}}, "_other"),
    ],
)
def test_bad_config_sections_are_refused(section: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Selection.from_config(section)


CONTRACT_EXAMPLE = {
    "_other": "excluded",
    "": {
        "_other": "excluded",
        "users": {"_other": "included", "ssn": "excluded"},
        "posts": {"_other": "included"},
    },
    "waitlist": "excluded",
}


def test_the_contract_example_validates_and_aliases_are_resolved() -> None:
    assert validate_selection(CONTRACT_EXAMPLE) == CONTRACT_EXAMPLE
    aliased = {
        "_other": "excl",
        "": {"_other": "excl", "users": {"_other": "incl", "ssn": "excl"}},
        "w": "excl",
    }
    assert validate_selection(aliased) == {
        "_other": "excluded",
        "": {"_other": "excluded", "users": {"_other": "included", "ssn": "excluded"}},
        "w": "excluded",
    }
    selection = Selection.from_wire(CONTRACT_EXAMPLE)
    assert selection.includes(USERS) and not selection.includes(ENTRIES)
    assert not selection.includes_column(USERS, "ssn")


@pytest.mark.parametrize(
    ("obj", "problem"),
    [
        ([], "expected an object"),
        ({}, 'missing "_other"'),
        ({"_other": "all"}, 'is not "included" or "excluded"'),
        ({"_other": "included", "": {"users": {"_other": "included"}}}, "component ''"),
        ({"_other": "included", "": {"_other": "included", "users": {}}}, "table 'users'"),
        ({"_other": "included", "": "included"}, 'a component is "excluded"'),
        (
            {"_other": "included", "": {"_other": "included", "users": "included"}},
            'a table is "excluded"',
        ),
        (
            {
                "_other": "included",
                "": {"_other": "included", "u": {"_other": "included", "_id": "excluded"}},
            },
            "_id",
        ),
        ({"_other": "included", "": {"_other": "included", "u": {"_other": "excluded"}}}, "_id"),
        ({"_other": "included", "../x": {"_other": "included"}}, "not a component path"),
        ({"_other": "included", "": {"_other": "included", "a/b": "excluded"}}, "not a table name"),
        (
            {
                "_other": "included",
                "": {"_other": "included", "u": {"_other": "included", "a.b": "excluded"}},
            },
            "not a column name",
        ),
        (
            {
                "_other": "included",
                "": {"_other": "included", "u": {"_other": "included", "c": True}},
            },
            "column 'c'",
        ),
        ({"_other": "included", 1: "excluded"}, "keys must be strings"),
    ],
)
def test_a_malformed_selection_object_is_refused_because_convex_would_export_everything(
    obj: Any, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(")) as caught:
        validate_selection(obj)
    assert "silently export everything" in (caught.value.hint or "")


# --- property: the wire object means what the patterns say ------------------------------

components = st.sampled_from(["", "wl", "wl/rl"])
tables = st.sampled_from(["a", "b", "*"])
columns = st.sampled_from([None, None, "x", "y", "_creationTime"])


@st.composite
def patterns(draw: st.DrawFn) -> str:
    component, table, column = draw(components), draw(tables), draw(columns)
    if table == "*":
        column = None
    return pattern_text(Pattern(component, table, column))


KEYS = [TableKey(c, t) for c in ("", "wl", "wl/rl", "other") for t in ("a", "b", "c")]


def _matches(pattern: Pattern, key: TableKey) -> bool:
    return pattern.component == key.component and pattern.table in ("*", key.table)


@settings(max_examples=200, deadline=None)
@given(st.lists(patterns(), max_size=4), st.lists(patterns(), max_size=4))
def test_the_wire_object_means_exactly_what_the_patterns_say(
    include: list[str], exclude: list[str]
) -> None:
    selection = Selection.from_patterns(include=include, exclude=exclude)
    assert validate_selection(selection.to_wire()) == selection.to_wire()  # canonical, valid
    inc = [Pattern.parse(p) for p in include]
    exc = [Pattern.parse(p) for p in exclude]
    for key in KEYS:
        included = (not inc or any(_matches(p, key) for p in inc)) and not any(
            _matches(p, key) and p.column is None for p in exc
        )
        assert selection.includes(key) is included, key
        if not included:
            continue
        named = {
            p.column
            for p in inc
            if p.column is not None and p.component == key.component and p.table == key.table
        }
        for column in ("x", "y", "z", "_creationTime", "_id"):
            expected = column == "_id" or (
                (not named or column in named | {"_creationTime"})
                and not any(_matches(p, key) and p.table != "*" and p.column == column for p in exc)
            )
            assert selection.includes_column(key, column) is expected, (key, column)
