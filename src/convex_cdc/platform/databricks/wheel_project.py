"""The convex-cdc source checkout a rendered bundle builds the extractor's wheel from.

convex-cdc is not published on PyPI, so the bundle's job cannot install it by name.
Instead the bundle's ``artifacts:`` entry builds a wheel from a checkout when
``databricks bundle deploy`` runs, and the CLI uploads it for the job's serverless
environment. ``render`` records where that checkout is, relative to the bundle; this
module finds the checkout and makes sure it is one the job can run.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Final

import convex_cdc
from convex_cdc import __version__
from convex_cdc.core.errors import ConfigError

DISTRIBUTION: Final = "convex-cdc"
WHEEL_EXTRA: Final = "databricks"
"""The extra the extractor job installs with the wheel (deltalake)."""


def find_checkout(given: Path | None) -> Path | None:
    """The checkout to build the wheel from.

    ``given`` if set; otherwise the checkout this convex-cdc runs from (an editable or
    source install), so that ``render`` from a checkout needs no flag. ``None`` when
    convex-cdc was installed from a wheel and nothing was given.

    Raises:
        ConfigError: the directory is not a convex-cdc checkout of this version with the
            ``databricks`` extra (the job would run other code than ``render`` described).
    """
    if given is not None:
        return _checked(given.resolve(), described_as="--project-dir")
    running = Path(convex_cdc.__file__).resolve().parents[2]  # <checkout>/src/convex_cdc
    if _project(running) is None:
        return None
    return _checked(running, described_as="the checkout convex-cdc runs from")


def _checked(directory: Path, *, described_as: str) -> Path:
    project = _project(directory)
    if project is None:
        raise ConfigError(
            f"{described_as} {directory} is not a convex-cdc checkout (no pyproject.toml naming "
            f"{DISTRIBUTION})",
            hint="pass --project-dir with the directory that holds convex-cdc's pyproject.toml",
        )
    version = project.get("version")
    if isinstance(version, str) and version != __version__:
        raise ConfigError(
            f"{described_as} {directory} holds convex-cdc {version}, but this is convex-cdc "
            f"{__version__}: the job would run other code than this bundle was rendered for",
            hint="render with the convex-cdc installed from that checkout, or check out "
            f"{__version__}",
        )
    extras = project.get("optional-dependencies", {})
    if not isinstance(extras, dict) or WHEEL_EXTRA not in extras:
        raise ConfigError(
            f"{described_as} {directory} has no `{WHEEL_EXTRA}` extra, which the extractor "
            "job installs",
            hint="pass --project-dir with a convex-cdc checkout that has it",
        )
    return directory


def _project(directory: Path) -> dict[str, Any] | None:
    """The ``[project]`` table of ``directory/pyproject.toml`` if it is convex-cdc's."""
    try:
        text = (directory / "pyproject.toml").read_text(encoding="utf-8")
        project = tomllib.loads(text).get("project")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    if not isinstance(project, dict) or project.get("name") != DISTRIBUTION:
        return None
    return project
