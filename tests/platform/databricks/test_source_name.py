"""Source names: derived from the deployment URL, or given; always path- and UC-safe."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convex_cdc.core.errors import ConfigError
from convex_cdc.platform.databricks.source_name import (
    parse_source_name,
    resolve_source_name,
    source_name_from_url,
)

SAFE = re.compile(r"[a-z][a-z0-9_]{0,63}")


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://happy-animal-123.convex.cloud", "happy_animal_123"),
        ("https://happy-animal-123.convex.cloud/", "happy_animal_123"),
        ("https://Happy-Animal-123.eu-west-1.convex.cloud", "happy_animal_123"),
        ("http://127.0.0.1:3210", "host_127_0_0_1_3210"),
        ("http://localhost:3210", "localhost_3210"),
        ("https://convex.example.com", "convex_example_com"),
        ("https://convex.example.com:8443/", "convex_example_com_8443"),
        ("http://[::1]:3210", "host_1_3210"),
        ("http://bronze:80", "bronze_80"),
        ("http://silver", "silver_host"),
    ],
)
def test_the_default_name_comes_from_the_deployment_url(url: str, name: str) -> None:
    assert source_name_from_url(url) == name


def test_a_long_host_keeps_a_digest_so_long_names_stay_apart() -> None:
    first = source_name_from_url(f"https://{'a' * 70}.example.com")
    second = source_name_from_url(f"https://{'a' * 70}.example.org")

    assert len(first) == len(second) == 64
    assert first != second and first[:50] == second[:50]


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.characters(codec="ascii", categories=("L", "N"), include_characters="-."),
        min_size=1,
        max_size=90,
    ),
    st.one_of(st.none(), st.integers(1, 65535)),
)
def test_every_derived_name_is_a_valid_source_name(host: str, port: int | None) -> None:
    url = f"http://{host}" + ("" if port is None else f":{port}")
    try:
        name = source_name_from_url(url)
    except ConfigError:
        return  # no host to name (e.g. only dots): the user is asked for --source
    assert SAFE.fullmatch(name), name
    assert parse_source_name(name) == name


@pytest.mark.parametrize("url", ["", "not a url", "https://", "http://host:99999", "file:///tmp/x"])
def test_a_url_without_a_host_asks_for_a_source_name(url: str) -> None:
    with pytest.raises(ConfigError, match="cannot derive a source name") as refused:
        source_name_from_url(url)
    assert "--source NAME" in (refused.value.hint or "")


@pytest.mark.parametrize("name", ["prod_app", "a", "x" * 64, "app2", "happy_animal_123"])
def test_valid_source_names_are_taken_as_they_are(name: str) -> None:
    assert parse_source_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["Prod", "prod-app", "2prod", "_prod", "prod.app", "prod/app", "x" * 65, "", "prød"],
)
def test_names_that_are_not_path_and_unity_catalog_safe_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="is not a source name"):
        parse_source_name(name)


@pytest.mark.parametrize("feed", ["bronze", "s3-export"])
def test_a_change_feed_given_as_source_points_at_feed(feed: str) -> None:
    """`render --source bronze` meant the change feed before `--feed`: never misread it."""
    with pytest.raises(ConfigError, match=f"--source {feed} names a change feed") as refused:
        parse_source_name(feed)
    assert f"--feed {feed}" in (refused.value.hint or "")


def test_layer_names_are_reserved() -> None:
    with pytest.raises(ConfigError, match="'silver' is reserved"):
        parse_source_name("silver")


def test_a_given_name_wins_over_the_url_and_one_of_them_is_needed() -> None:
    url = "https://happy-animal-123.convex.cloud"
    assert resolve_source_name("prod_app", url, command="x") == "prod_app"
    assert resolve_source_name(None, url, command="x") == "happy_animal_123"
    with pytest.raises(ConfigError, match="`databricks render` needs to know which deployment"):
        resolve_source_name(None, None, command="databricks render")
