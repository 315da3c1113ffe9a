"""The regenerate flow: summaries for papers that lack one, or for an explicit selection.

    atlas regenerate                      # what the current generator has not yet summarised
    atlas regenerate --pmid 123 --pmid 456
    atlas regenerate --all --max-cost 5
"""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from atlas.config import settings_for_database
from atlas.store import Store
from flows.ingest import logged_progress
from flows.publish import publish_task
from generator.pipeline import report_markdown, run_regeneration


@task(name="generate-summaries", cache_policy=NO_CACHE)
def generate_task(parameters: dict[str, Any]) -> dict[str, Any]:
    return run_regeneration(**parameters, progress=logged_progress("summaries"))


@flow(name="regenerate")
def regenerate(pmids: list[str] | None = None, since: str | None = None, all: bool = False, dry_run: bool = False,
               max_cost: float | None = None, db_path: str | None = None,
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generate (or dry-run) summaries and attach a report with counts, cost, failures and versions.

    ``overrides`` are settings for this run (e.g. a model or price table). Secrets are refused here:
    Prefect stores flow parameters, so API keys come only from ``ATLAS_*`` variables or the config file.
    """
    secret = sorted(k for k in (overrides or {}) if k.endswith("api_key"))
    if secret:
        raise ValueError(f"pass {', '.join(secret)} through the environment, not as a flow parameter")
    parameters = {
        "pmids": pmids or None,
        "since": date.fromisoformat(since) if since else None,
        "regenerate_all": all,
        "dry_run": dry_run,
        "max_cost": max_cost,
        "db_path": db_path,
        "overrides": overrides,
    }
    counts = generate_task(parameters)
    if not dry_run:
        settings = settings_for_database(db_path, overrides)
        with Store.open(settings.database, snapshot=settings.snapshot) as store:
            counts["publish"] = publish_task(store, settings)
    title = "Regenerate (dry run)" if dry_run else f"Regenerate run `{counts.get('run_id')}`: {counts.get('status')}"
    create_markdown_artifact(key="regenerate-summary", markdown=report_markdown(counts, title=title),
                             description="summaries generated, cost and failures")
    get_run_logger().info("regenerate: %s", {k: v for k, v in counts.items() if k != "failures"})
    return counts
