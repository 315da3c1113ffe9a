"""The publish step shared by every flow: snapshot, exports, evidence pages."""

from __future__ import annotations

import hashlib
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from atlas import __version__
from atlas.config import Settings
from atlas.pages import render_pages
from atlas.store import Store
from atlas.store.export import evidence_fingerprint, evidence_rows, export_views

FINGERPRINT_FILE = ".evidence-fingerprint"


def pages_fingerprint(store: Store) -> str:
    """What the pages show (every evidence row) plus what draws them (the templates and code version)."""
    templates = hashlib.sha256(__version__.encode())
    for entry in sorted(resources.files("atlas.pages").joinpath("templates").iterdir(), key=lambda e: e.name):
        templates.update(entry.name.encode() + entry.read_bytes())
    return hashlib.sha256((evidence_fingerprint(store) + templates.hexdigest()).encode()).hexdigest()


def publish(store: Store, settings: Settings) -> dict[str, Any]:
    """Snapshot first (analysts' copy), then Parquet, then pages unless the evidence they show is unchanged."""
    snapshot = store.publish_snapshot(settings.snapshot)
    exports = export_views(store, settings.data_dir / "export", "parquet")
    pages_dir = settings.data_dir / "pages"
    fingerprint = pages_fingerprint(store)
    marker = pages_dir / FINGERPRINT_FILE
    if marker.exists() and marker.read_text() == fingerprint and (pages_dir / "index.html").exists():
        return {"snapshot": str(snapshot), "exports": len(exports), "pages_written": 0, "pages_skipped": 0,
                "pages": "unchanged"}
    result = render_pages(evidence_rows(store), pages_dir, accessed=date.today())
    Path(marker).write_text(fingerprint)
    return {"snapshot": str(snapshot), "exports": len(exports), "pages_written": result.changed,
            "pages_skipped": len(result.skipped), "pages": str(result.index)}


@task(name="publish", cache_policy=NO_CACHE)
def publish_task(store: Store, settings: Settings) -> dict[str, Any]:
    return publish(store, settings)
