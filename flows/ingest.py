"""Tasks of the nightly and backfill flows: search, fetch batches, store, scan, generate.

Flows hold no domain logic: every step here calls a function from ``atlas``
inside a Prefect task. Tasks are per batch, never per paper.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from atlas.config import Settings
from atlas.errors import AtlasError
from atlas.ingest import WATERMARK, Window, batches, find_pmids, ingest_batch
from atlas.pubmed.client import EutilsClient
from atlas.store import Store
from atlas.store.papers import BatchCounts
from atlas.store.runs import record_failure, set_watermark
from generator.pipeline import generate_pending
from scanner.pipeline import scan_pending
from scanner.policy import Policy


@task(name="search", cache_policy=NO_CACHE)
def search_task(client: EutilsClient, query: str, window: Window) -> list[str]:
    return find_pmids(client, query, window)


@task(name="fetch-parse-store", cache_policy=NO_CACHE)
def batch_task(client: EutilsClient, store: Store, pmids: list[str], run_id: str,
               write_lock: threading.Lock) -> BatchCounts:
    return ingest_batch(client, store, pmids, run_id=run_id, write_lock=write_lock)


@task(name="scan", cache_policy=NO_CACHE)
def scan_task(store: Store, settings: Settings, policy: Policy, run_id: str, client: EutilsClient) -> dict[str, Any]:
    """Extract facts for new or changed papers, then decide every undecided extraction."""
    return scan_pending(store, settings, policy, run_id=run_id, client=client)


def logged_progress(what: str, every: float = 0.1) -> Callable[[int, int], None]:
    """A progress callback for long steps: one log line each tenth of the way (Prefect shows them live)."""
    logger = get_run_logger()
    shown = [-1.0]

    def report(done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        if fraction >= 1.0 or fraction - shown[0] >= every:
            shown[0] = fraction
            logger.info("%s: %s of %s (%.0f%%)", what, f"{done:,}", f"{total:,}", 100 * fraction)

    return report


@task(name="generate", cache_policy=NO_CACHE)
def generate_task(store: Store, settings: Settings, run_id: str) -> dict[str, Any]:
    """Summarise papers that lack a summary for their inputs, generator version and model."""
    return generate_pending(store, settings, run_id=run_id, max_cost=settings.llm_max_cost_per_run,
                            progress=logged_progress("summaries"))


def ingest_window(settings: Settings, store: Store, client: EutilsClient, window: Window, *, run_id: str,
                  advance_watermark: bool) -> dict[str, Any]:
    """Fetch every new or revised record in the window; advance the watermark only if all batches stored."""
    logger = get_run_logger()
    pmids = search_task(client, settings.query, window)
    logger.info("window %s: %d PMIDs to fetch", window, len(pmids))
    write_lock = threading.Lock()
    futures = [
        batch_task.submit(client, store, chunk, run_id, write_lock)
        for chunk in batches(pmids, settings.batch_size)
    ]
    wait(futures)
    totals = BatchCounts()
    failed_batches = 0
    for chunk, future in zip(batches(pmids, settings.batch_size), futures):
        state = future.state
        if state.is_completed():
            totals.add(future.result())
            continue
        failed_batches += 1
        error = _state_error(state)
        logger.error("batch of %d PMIDs starting %s failed: %s", len(chunk), chunk[0], error)
        with write_lock:
            for pmid in chunk:
                record_failure(store, run_id=run_id, pmid=pmid, stage="fetch", error=error)
    if advance_watermark and failed_batches == 0:
        set_watermark(store, WATERMARK, window.end, run_id=run_id)
    counts = totals.as_dict()
    counts.update(
        window=str(window), found=len(pmids), failed_batches=failed_batches,
        requests=getattr(client, "requests_made", None), retries=getattr(client, "retries", None),
    )
    counts["new_pmids"] = totals.inserted_pmids
    return counts


def _state_error(state: Any) -> str:
    try:
        state.result(raise_on_failure=True)
    except AtlasError as error:
        return f"{type(error).__name__}: {error}"
    except Exception as error:  # noqa: BLE001 - recorded as the batch's failure row, never swallowed silently
        return f"{type(error).__name__}: {error}"
    return state.message or "unknown failure"
