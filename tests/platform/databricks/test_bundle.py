"""The rendered bundle deploys: valid configuration, dev and prod apart, the wheel it builds,
and the bundles of two sources side by side without sharing a name.

Every rendered YAML file is checked against the Databricks CLI's bundle schema offline
(:mod:`tests.platform.databricks.bundle_schema`), and each kind of mistake that schema
exists to catch is shown to be caught. ``render`` itself refuses to write a bundle with
made-up values: a missing location, deployment or checkout is a usage error (exit 2)
naming the flag.
"""

from __future__ import annotations

import posixpath
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from convex_cdc.cli import main
from convex_cdc.core.errors import ConfigError
from convex_cdc.platform.databricks.bronze import BronzeSink
from convex_cdc.platform.databricks.control_table import DeltaCheckpointStore
from convex_cdc.platform.databricks.render import render
from convex_cdc.platform.databricks.render_options import RenderOptions
from convex_cdc.platform.databricks.source_name import SourceName
from convex_cdc.platform.databricks.warehouse import Warehouse
from convex_cdc.platform.databricks.wheel_project import WHEEL_EXTRA
from tests.platform.databricks.bundle_schema import (
    bundle_configuration,
    bundle_problems,
    target_variable,
    unassigned_variables,
)
from tests.platform.databricks.change_batches import (
    SOURCE,
    SOURCE_NAME,
    URL,
    batch,
    checkpoint,
    doc,
)
from tests.platform.databricks.test_render import BRONZE, CASES, SPECS

REPO = Path(__file__).parents[3]
JOB = "resources/convex_cdc_extract.job.yml"
PIPELINE = "resources/convex_cdc_silver.pipeline.yml"
JOB_KEY = "convex_cdc_test_animal_123_extract"
PIPELINE_KEY = "convex_cdc_test_animal_123_silver"


@pytest.fixture(autouse=True)
def no_deployment_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``render --url`` and ``--source`` read CONVEX_URL and CONVEX_CDC_SOURCE."""
    monkeypatch.delenv("CONVEX_URL", raising=False)
    monkeypatch.delenv("CONVEX_CDC_SOURCE", raising=False)
    yield


def rendered(case: str) -> dict[str, str]:
    return render(SPECS, CASES[case])


def parsed(files: Mapping[str, str], name: str) -> Any:
    return yaml.safe_load(files[name])


# --- schema ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_rendered_yaml_file_is_valid_bundle_configuration(case: str) -> None:
    files = rendered(case)

    assert bundle_problems(files) == []
    checked = set(bundle_configuration(files))
    assert checked == {name for name in files if name.endswith(".yml")}


MISTAKES = {
    "misspelled job field": (
        JOB,
        "max_concurrent_runs: 1",
        "max_concurent_runs: 1",
        "unexpected field 'max_concurent_runs' for class job",
    ),
    "unknown target mode": (
        "databricks.yml",
        "mode: production",
        "mode: prod",
        "targets.prod.mode: 'prod' is not one of development, production",
    ),
    "deprecated pipeline field": (
        PIPELINE,
        "serverless: true",
        "serverless: true\n      target: convex_silver",
        ".target: deprecated field",
    ),
    "enum value": (JOB, "pause_status: UNPAUSED", "pause_status: RUNNING", "pausestatus"),
    "misspelled artifact field": (
        "databricks.yml",
        "dynamic_version: true",
        "dynamic_versions: true",
        "artifacts.convex_cdc: unknown field 'dynamic_versions'",
    ),
    "misspelled run_as field": (
        "databricks.yml",
        "service_principal_name:",
        "service_principal:",
        "unexpected field 'service_principal' for class jobrunas",
    ),
    "undeclared variable": (
        JOB,
        "${var.secret_scope}",
        "${var.secret_scopes}",
        "${var.secret_scopes} is used but not declared",
    ),
    "dangling resource reference": (
        JOB,
        f"${{resources.pipelines.{PIPELINE_KEY}.id}}",
        "${resources.pipelines.silver.id}",
        "${resources.pipelines.silver.id} names no resource of the bundle",
    ),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_deliberately_wrong_field_is_caught(mistake: str) -> None:
    name, right, wrong, problem = MISTAKES[mistake]
    files = rendered("bronze_scd1")
    assert files[name].count(right) == 1
    files[name] = files[name].replace(right, wrong)

    problems = bundle_problems(files)

    assert any(problem in p.lower() for p in problems), problems


# --- dev and prod ------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_dev_and_prod_publish_silver_to_different_schemas(case: str) -> None:
    files = rendered(case)
    pipeline = parsed(files, PIPELINE)["resources"]["pipelines"][PIPELINE_KEY]
    assert (pipeline["catalog"], pipeline["schema"]) == (
        "${var.silver_catalog}",
        "${var.silver_schema}",
    )

    def silver(target: str) -> tuple[str, str]:
        return (
            target_variable(files, target, "silver_catalog"),
            target_variable(files, target, "silver_schema"),
        )

    assert silver("prod") == ("main", "convex_test_animal_123_silver")
    # Each developer gets a schema of their own, so two dev deploys never collide either.
    assert silver("dev") == (
        "main",
        "convex_test_animal_123_silver_${workspace.current_user.short_name}",
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_prod_runs_as_a_service_principal_from_a_fixed_root_path(case: str) -> None:
    files = rendered(case)
    targets = parsed(files, "databricks.yml")["targets"]
    dev, prod = targets["dev"], targets["prod"]

    assert (dev["mode"], dev["default"]) == ("development", True)
    assert prod["mode"] == "production"
    # The CLI refuses `mode: production` without an explicit root_path.
    assert prod["workspace"]["root_path"] == (
        "/Workspace/Users/${var.service_principal}/.bundle/${bundle.name}/${bundle.target}"
    )
    assert prod["run_as"] == {"service_principal_name": "${var.service_principal}"}
    # Deploying prod needs the service principal; dev nothing but, like prod, the SQL
    # warehouse of the monitoring dashboard when there is one (bronze feed).
    dashboard = {"warehouse_id"} if CASES[case].feed == "bronze" else set()
    assert unassigned_variables(files, "prod") == {"service_principal"} | dashboard
    assert unassigned_variables(files, "dev") == dashboard


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_job_runs_one_at_a_time_and_then_updates_the_pipeline(case: str) -> None:
    files = rendered(case)
    job_file = next(name for name in files if name.endswith(".job.yml"))
    (job,) = parsed(files, job_file)["resources"]["jobs"].values()

    assert job["max_concurrent_runs"] == 1
    assert job["schedule"]["quartz_cron_expression"] == "${var.schedule}"
    assert job["tasks"][-1]["pipeline_task"] == {
        "pipeline_id": f"${{resources.pipelines.{PIPELINE_KEY}.id}}"
    }


# --- the wheel ---------------------------------------------------------------------------


def test_the_job_installs_the_wheel_the_bundle_builds_from_the_checkout() -> None:
    files = render(SPECS, BRONZE)
    bundle = parsed(files, "databricks.yml")
    job = parsed(files, JOB)["resources"]["jobs"][JOB_KEY]
    (artifact,) = bundle["artifacts"].values()
    (environment,) = job["environments"]

    assert artifact["type"] == "whl"
    assert artifact["path"] == "../convex-cdc"  # relative to databricks.yml
    assert artifact["build"].startswith("python3 -m pip wheel --no-deps --wheel-dir dist ")
    # The dependency is relative to resources/; it names the artifact's dist/ and extra.
    (dependency,) = environment["spec"]["dependencies"]
    wheel_glob, extra = dependency.removesuffix("]").split("[")
    in_bundle = posixpath.normpath(posixpath.join("resources", wheel_glob))
    assert in_bundle == "../convex-cdc/dist/*.whl"
    assert extra == WHEEL_EXTRA
    # A local path (the CLI uploads it), not a requirement pip would look up on PyPI.
    assert dependency.startswith("../")
    assert bundle["bundle"]["databricks_cli_version"] == ">= 1.13.0"  # wheel extras

    extract = job["tasks"][0]
    wheel = extract["python_wheel_task"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert wheel["package_name"] == "convex_cdc"
    assert project["scripts"][wheel["entry_point"]] == "convex_cdc.cli:databricks_extract"
    assert WHEEL_EXTRA in project["optional-dependencies"]
    assert extract["environment_key"] == environment["environment_key"]


def test_the_extractor_job_takes_secrets_and_s3_credentials_by_name_only() -> None:
    """The deploy key comes from the secret scope and S3 credentials from a service
    credential (or the scope): job parameters name them, never hold them. The source name
    is fixed: it is part of every name the bundle registered bronze and silver under."""
    job = parsed(render(SPECS, BRONZE), JOB)["resources"]["jobs"][JOB_KEY]
    parameters = job["tasks"][0]["python_wheel_task"]["parameters"]

    assert parameters == [
        "--warehouse",
        "${var.warehouse}",
        "--source",
        "test_animal_123",
        "--url",
        "${var.convex_url}",
        "--secret-scope",
        "${var.secret_scope}",
        "--service-credential",
        "${var.service_credential}",
    ]


def test_the_s3_export_bundle_builds_no_wheel() -> None:
    files = rendered("s3_export_scd2")
    bundle = parsed(files, "databricks.yml")

    assert "artifacts" not in bundle
    assert "databricks_cli_version" not in bundle["bundle"]
    assert not any(name.endswith("extract.job.yml") for name in files)


# --- no unused configuration -------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_pipeline_configuration_key_is_read_by_a_pipeline_source(case: str) -> None:
    files = rendered(case)
    pipeline = parsed(files, PIPELINE)["resources"]["pipelines"][PIPELINE_KEY]
    sources = "".join(
        files[f"src/silver_{language}/convex_silver.{ext}"]
        for language, ext in [("sql", "sql"), ("python", "py")]
    )

    unread = [
        key
        for key in pipeline["configuration"]
        if f"${{{key}}}" not in sources and f'"{key}"' not in sources
    ]

    assert unread == []


# --- render refuses placeholders ---------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "flag"),
    [
        (RenderOptions(SOURCE_NAME, convex_url=URL, project_dir="."), "--warehouse-location"),
        (RenderOptions(SOURCE_NAME, warehouse="s3://lake/convex", project_dir="."), "--url"),
        (RenderOptions(SOURCE_NAME, warehouse="s3://lake/convex", convex_url=URL), "--project-dir"),
        (RenderOptions(SOURCE_NAME, feed="s3-export"), "--raw-change-log"),
    ],
)
def test_render_refuses_a_bundle_without_a_value_it_needs(
    options: RenderOptions, flag: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{flag} is required"):
        render(SPECS, options)


def run_render(*args: str) -> int:
    """``convex-cdc databricks render ARGS`` as a user runs it: the exit code."""
    try:
        main(["databricks", "render", *args])
    except SystemExit as exited:
        return int(exited.code or 0)
    return 0


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    (line,) = [line for line in capsys.readouterr().err.splitlines() if line]
    return line


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--tables", "messages", "--url", URL], "--warehouse-location"),
        (
            ["--tables", "messages", "--source", "app", "--warehouse-location", "s3://lake/c"],
            "--url",
        ),
        (["--tables", "messages", "--source", "app", "--feed", "s3-export"], "--raw-change-log"),
    ],
)
def test_render_without_a_needed_flag_exits_2_naming_it(
    args: list[str], flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bundle"

    code = run_render("--out", str(out), *args)

    assert code == 2
    line = error_line(capsys)
    assert line.startswith(f"error: {flag} is required"), line
    assert not out.exists()


def test_a_local_warehouse_is_no_location_for_databricks(
    warehouse: Warehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    BronzeSink(warehouse, SOURCE).write(batch(1, [doc("messages", "m1", 10, text="hi")]))

    code = run_render("--out", str(tmp_path / "b"), "--warehouse", warehouse.root, "--url", URL)

    assert code == 2
    assert "--warehouse-location" in error_line(capsys)


def test_render_takes_the_deployment_from_the_warehouse_checkpoint(
    warehouse: Warehouse, tmp_path: Path
) -> None:
    BronzeSink(warehouse, SOURCE).write(batch(1, [doc("messages", "m1", 10, text="hi", n=1)]))
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(checkpoint(1, cursor=10, walk=5))
    out = tmp_path / "bundle"

    code = run_render(
        "--out", str(out), "--warehouse", warehouse.root, "--source", SOURCE_NAME,
        "--location", "s3://lake/convex",
    )  # fmt: skip

    assert code == 0
    files = {str(p.relative_to(out)): p.read_text() for p in out.rglob("*") if p.is_file()}
    assert target_variable(files, "prod", "convex_url") == URL
    assert target_variable(files, "prod", "warehouse") == "s3://lake/convex"
    assert bundle_problems(files) == []


def test_render_refuses_a_url_of_another_deployment_than_the_warehouse_holds(
    warehouse: Warehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(checkpoint(0, walk=5, snapshot=True))
    other = "https://other-animal-456.convex.cloud"

    code = run_render(
        "--out", str(tmp_path / "b"), "--warehouse", warehouse.root, "--source", SOURCE_NAME,
        "--tables", "messages", "--warehouse-location", "s3://lake/convex", "--url", other,
    )  # fmt: skip

    assert code == 2
    line = error_line(capsys)
    assert (
        f"--url {other} is not the deployment source 'test_animal_123' replicates ({URL})" in line
    )


def test_render_refuses_a_project_dir_that_is_not_a_convex_cdc_checkout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_render(
        "--out", str(tmp_path / "b"), "--tables", "messages", "--url", URL,
        "--warehouse-location", "s3://lake/convex", "--project-dir", str(tmp_path),
    )  # fmt: skip

    assert code == 2
    assert "--project-dir" in error_line(capsys)


def test_the_bundle_points_at_the_checkout_render_runs_from(tmp_path: Path) -> None:
    out = tmp_path / "deploy" / "bundle"

    code = run_render(
        "--out", str(out), "--tables", "messages", "--url", URL,
        "--warehouse-location", "s3://lake/convex",
    )  # fmt: skip

    assert code == 0
    bundle = yaml.safe_load((out / "databricks.yml").read_text())
    (artifact,) = bundle["artifacts"].values()
    assert (out / artifact["path"]).resolve() == REPO.resolve()
    job = yaml.safe_load((out / JOB).read_text())["resources"]["jobs"][JOB_KEY]
    (dependency,) = job["environments"][0]["spec"]["dependencies"]
    assert (out / "resources" / dependency.split("/dist/")[0]).resolve() == REPO.resolve()


# --- several sources ---------------------------------------------------------------------


def databricks_names(files: Mapping[str, str]) -> set[str]:
    """Every name a rendered bundle gives Databricks, lower-cased as Unity Catalog compares
    them: the bundle, each resource's key and name, each target's silver schema and its
    streaming tables, the bronze schema with everything registered in it, and each storage
    location."""
    bundle = yaml.safe_load(files["databricks.yml"])
    names = {f"bundle {bundle['bundle']['name']}"}
    for name, content in files.items():
        if name.startswith("resources/"):
            for kind, resources in yaml.safe_load(content)["resources"].items():
                for key, resource in resources.items():
                    shown = resource.get("name") or resource.get("display_name") or key
                    names |= {f"{kind} {key}", f"{kind} {shown}"}
    tables = re.findall(
        r"CREATE OR REFRESH STREAMING TABLE `([^`]+)`", files["src/silver_sql/convex_silver.sql"]
    )
    for target in ("dev", "prod"):
        schema = "{}.{}".format(
            target_variable(files, target, "silver_catalog"),
            target_variable(files, target, "silver_schema"),
        )
        names |= {f"schema {schema}"} | {f"table {schema}.{table}" for table in tables}
    bronze = files.get("sql/bronze_external_tables.sql", "")
    names |= {f"schema {m}" for m in re.findall(r"CREATE SCHEMA IF NOT EXISTS (\S+);", bronze)}
    names |= {
        f"table {m}"
        for m in re.findall(
            r"^CREATE (?:TABLE IF NOT EXISTS|OR REPLACE VIEW) (\S+)", bronze, flags=re.MULTILINE
        )
    }
    names |= {f"location {m}" for m in re.findall(r"LOCATION '([^']+)'", bronze)}
    return {name.replace("`", "").lower() for name in names}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_bundles_of_two_sources_share_no_name(case: str) -> None:
    """Two deployments, both with the same tables, rendered from one warehouse: their
    bundles deploy side by side (no resource, schema, table or location in common)."""
    first = render(SPECS, CASES[case])
    second = render(SPECS, replace(CASES[case], source_name=SourceName("staging_app")))

    first_names, second_names = databricks_names(first), databricks_names(second)

    kinds = {name.split(" ", 1)[0] for name in first_names}
    assert kinds >= {"bundle", "jobs", "pipelines", "schema", "table"}
    assert first_names & second_names == set()
    assert "schema main.convex_staging_app_silver" in second_names
    if case == "bronze_scd1":
        assert "table main.convex_staging_app_bronze.messages" in second_names
        assert "table main.convex_staging_app_bronze.convex_cdc_checkpoint" in second_names
    assert bundle_problems(second) == []


@pytest.mark.parametrize("feed", ["bronze", "s3-export"])
def test_render_source_naming_a_change_feed_exits_2_pointing_at_feed(
    feed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--source` used to be the change feed; the old spelling is refused, never misread."""
    out = tmp_path / "bundle"

    code = run_render("--out", str(out), "--tables", "messages", "--source", feed, "--url", URL)

    assert code == 2
    line = error_line(capsys)
    assert line.startswith(f"error: --source {feed} names a change feed"), line
    assert f"--feed {feed}" in line
    assert not out.exists()


def test_render_of_a_source_the_warehouse_does_not_hold_exits_2(
    warehouse: Warehouse, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = DeltaCheckpointStore(warehouse, SOURCE)
    store.load()
    store.save(checkpoint(0, walk=5, snapshot=True))

    code = run_render(
        "--out", str(tmp_path / "b"), "--warehouse", warehouse.root, "--source", "mistyped",
        "--location", "s3://lake/convex",
    )  # fmt: skip

    assert code == 2
    assert "holds no source 'mistyped'" in error_line(capsys)


def test_render_without_a_source_or_url_exits_2_asking_for_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run_render("--out", str(tmp_path / "b"), "--tables", "messages")

    assert code == 2
    line = error_line(capsys)
    assert "needs to know which deployment" in line and "--source NAME" in line
