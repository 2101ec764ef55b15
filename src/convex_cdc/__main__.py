"""``python -m convex_cdc`` runs the CLI."""

from convex_cdc.cli import main

main()
