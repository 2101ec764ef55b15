"""convex-cdc: replicate a Convex deployment into a lakehouse."""

__version__ = "0.1.0"
