"""DuckDB store: the only package that runs SQL that writes."""

from atlas.store.db import Store

__all__ = ["Store"]
