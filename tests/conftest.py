"""Shared fixtures live in tests/fixtures/*; each file is a pytest plugin."""

pytest_plugins = [
    "tests.fixtures.moto_s3",
    "tests.fixtures.devserver",
    "tests.fixtures.tiny_filesystem",
]
