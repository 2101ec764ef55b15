"""The ``convex-cdc`` command: one entry point, one subcommand per job.

Each subcommand lives in :mod:`convex_cdc.commands`; this module wires them together
and turns every :class:`~convex_cdc.core.errors.ConvexCdcError` into one line on stderr
and a distinct exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from convex_cdc import __version__
from convex_cdc.commands.config_file import command_defaults, load_config
from convex_cdc.core.errors import ConvexCdcError
from convex_cdc.logs import configure_logging, redact_secrets


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="convex-cdc")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="CONVEX_CDC_CONFIG",
    metavar="FILE",
    help="TOML file with defaults for every flag except secrets [env: CONVEX_CDC_CONFIG].",
)
@click.pass_context
def cli(ctx: click.Context, verbose: int, config_path: Path | None) -> None:
    """Replicate a Convex deployment into a lakehouse.

    The deployment URL comes from --url or CONVEX_URL, the deploy key from the
    CONVEX_DEPLOY_KEY environment variable (or the variable named by --deploy-key-env);
    the key is never accepted as a flag value. Typical loop: `sync` (Convex → raw
    change log), `materialize` (→ staging), `publish` (→ S3 with a manifest), or `run`
    for all three.
    """
    configure_logging(verbose)
    if config_path is not None:
        ctx.default_map = command_defaults(load_config(config_path))


def _register() -> None:
    from convex_cdc.commands import registry

    for command in registry.commands():
        cli.add_command(command)


_register()


def main() -> None:
    """Console-script entry point."""
    try:
        cli.main(prog_name="convex-cdc", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConvexCdcError as exc:
        click.echo(f"error: {redact_secrets(exc.one_line())}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
