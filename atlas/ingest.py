"""Fetch → parse → store for one batch of PMIDs, and the window a run covers.

These are the pieces the nightly and backfill flows orchestrate. A batch is
all-or-nothing in the store; a record that cannot be parsed becomes a failure
row and the rest of its batch is stored.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from atlas.pubmed.client import EutilsClient
from atlas.pubmed.parse import iter_records
from atlas.store.db import Store
from atlas.store.papers import BatchCounts, write_batch

WATERMARK = "pubmed:edat"


@dataclass(frozen=True, slots=True)
class Window:
    """An inclusive range of Entrez (and modification) dates to search."""

    start: date
    end: date

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def nightly_window(watermark: date | None, *, today: date, overlap_days: int, first_run_days: int) -> Window:
    """Start at the watermark minus an overlap (records are indexed late); first run looks back further."""
    start = watermark - timedelta(days=overlap_days) if watermark else today - timedelta(days=first_run_days)
    return Window(min(start, today), today)


def batches(pmids: Sequence[str], size: int) -> Iterator[list[str]]:
    for offset in range(0, len(pmids), size):
        yield list(pmids[offset : offset + size])


def find_pmids(client: EutilsClient, query: str, window: Window) -> list[str]:
    """New records (edat) plus revised ones (mdat) in the window, de-duplicated, in PMID order."""
    found: set[str] = set()
    for datetype in ("edat", "mdat"):
        found.update(client.esearch_ids(query, datetype=datetype, mindate=window.start, maxdate=window.end))
    return sorted(found, key=int)


def ingest_batch(client: EutilsClient, store: Store, pmids: Sequence[str], *, run_id: str,
                 write_lock: threading.Lock | None = None) -> BatchCounts:
    """EFetch one batch, parse it, store it in one transaction.

    Fetching happens outside the lock so several batches can be in flight while
    only one writes. PMIDs the server did not return are counted as missing.
    """
    body = client.efetch_pubmed(pmids)
    items = list(iter_records(body))
    lock = write_lock or threading.Lock()
    with lock:
        counts = write_batch(store, items, run_id=run_id, source="efetch")
    counts.missing = len(set(pmids) - {item.pmid for item in items})
    return counts
