"""The nightly flow: fetch new and revised PubMed records, store, classify, summarise, publish.

    atlas nightly                 # today's window, from the stored watermark
    atlas backfill --from 2024-01-01 --to 2024-12-31
"""

from __future__ import annotations

from datetime import date
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from atlas.config import Settings, load_settings
from atlas.ingest import WATERMARK, Window, nightly_window
from atlas.pubmed.client import EutilsClient
from atlas.report import run_markdown
from atlas.store import Store
from atlas.store.runs import finish_run, get_watermark, run_failures, start_run
from flows.ingest import generate_task, ingest_window, scan_task
from flows.publish import publish_task
from flows.versions import current_versions
from scanner.policy import load_policy


def run_ingest(settings: Settings, *, flow_name: str, window_for, advance_watermark: bool,
               parameters: dict[str, Any]) -> dict[str, Any]:
    """Open the store, record the run, then fetch → store → scan → generate → publish.

    The run row is finished before publishing so the snapshot shows how its own run ended.
    """
    logger = get_run_logger()
    policy = load_policy(settings.policy_path)  # a bad policy fails the run before anything is fetched
    with Store.open(settings.database, snapshot=settings.snapshot) as store:
        versions = current_versions(policy)
        run_id = start_run(store, flow_name, parameters=parameters, versions=versions)
        counts: dict[str, Any] = {}
        try:
            window: Window = window_for(store)
            with EutilsClient(settings) as client:
                counts = ingest_window(settings, store, client, window, run_id=run_id,
                                       advance_watermark=advance_watermark)
                counts["scan"] = scan_task(store, settings, policy, run_id, client)
            generated = generate_task(store, settings, run_id)
            counts["generate"] = {k: v for k, v in generated.items() if not isinstance(v, (list, dict))}
            counts["summary_failures"] = generated.get("failures", [])
        except BaseException as error:
            finish_run(store, run_id, status="failed", counts=_storable(counts), error=f"{type(error).__name__}: {error}")
            store.publish_snapshot(settings.snapshot)
            raise
        # A window with a failed batch is not finished: the watermark stayed put and the next run retries it.
        status = "completed" if not counts.get("failed_batches") else "partial"
        finish_run(store, run_id, status=status, counts=_storable(counts))
        counts["publish"] = publish_task(store, settings)
        counts["failures"] = run_failures(store, run_id)
    counts.update(run_id=run_id, status=status, versions=versions)
    create_markdown_artifact(key=f"{flow_name}-summary", markdown=run_markdown(flow_name, counts),
                             description=f"{flow_name} run {run_id}")
    logger.info("%s run %s %s: %s", flow_name, run_id, status, _storable(counts))
    return counts


def _storable(counts: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in counts.items() if k not in {"new_pmids", "summary_failures", "failures"}}


@flow(name="nightly", task_runner=ThreadPoolTaskRunner(max_workers=3))
def nightly(as_of: date | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fetch everything entered or revised since the last good run (minus an overlap) up to ``as_of``."""
    settings = load_settings(**(overrides or {}))
    today = as_of or date.today()

    def window_for(store: Store) -> Window:
        return nightly_window(get_watermark(store, WATERMARK), today=today,
                              overlap_days=settings.overlap_days, first_run_days=settings.first_run_days)

    return run_ingest(settings, flow_name="nightly", window_for=window_for, advance_watermark=True,
                      parameters={"as_of": today.isoformat()})


@flow(name="backfill", task_runner=ThreadPoolTaskRunner(max_workers=3))
def backfill(start: date, end: date, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fetch an explicit date range; the nightly watermark is left where it is."""
    if end < start:
        raise ValueError(f"backfill range is empty: {start} is after {end}")
    settings = load_settings(**(overrides or {}))
    return run_ingest(settings, flow_name="backfill", window_for=lambda store: Window(start, end),
                      advance_watermark=False, parameters={"start": start.isoformat(), "end": end.isoformat()})
