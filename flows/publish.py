"""The publish step shared by every flow: snapshot, exports, evidence pages."""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from atlas.config import Settings
from atlas.pages import render_pages
from atlas.store import Store
from atlas.store.export import evidence_rows, export_views


def publish(store: Store, settings: Settings) -> dict[str, Any]:
    """Snapshot first (analysts' copy), then Parquet and pages rendered from the same store."""
    snapshot = store.publish_snapshot(settings.snapshot)
    exports = export_views(store, settings.data_dir / "export", "parquet")
    result = render_pages(evidence_rows(store), settings.data_dir / "pages", accessed=date.today())
    return {"snapshot": str(snapshot), "exports": len(exports), "pages_written": result.changed,
            "pages_skipped": len(result.skipped), "pages_dir": str(result.out_dir)}


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(store: Store, settings: Settings) -> dict[str, Any]:
    return publish(store, settings)
