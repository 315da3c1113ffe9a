"""Fetch → parse → store for one batch of PMIDs, and the window a run covers.

These are the pieces the nightly and backfill flows orchestrate, and the
loader of whole PubMed XML files (``atlas load``). A batch is all-or-nothing in
the store; a record that cannot be parsed becomes a failure row and the rest of
its batch is stored.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from atlas.errors import ParseError
from atlas.pubmed.client import EutilsClient
from atlas.pubmed.parse import Record, Source, iter_records
from atlas.store.db import Store
from atlas.store.papers import BatchCounts, stored_pmids, write_batch

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


@dataclass(slots=True)
class LoadCounts:
    """What loading one file did: the store's counts, and the records left out as not ours."""

    stored: BatchCounts
    skipped: int = 0
    read: int = 0


def load_pubmed_xml(store: Store, source: Source, *, run_id: str, known_only: bool = True, batch_size: int = 5_000,
                    workers: int = 1, on_batch: Callable[[LoadCounts], None] | None = None) -> LoadCounts:
    """Store the records of one PubMed XML document (a baseline or daily update file, a saved efetch reply).

    An update file carries all of PubMed, so with ``known_only`` only records
    and ``DeleteCitation``s for PMIDs already in the store are written: the
    evidence base keeps its own papers up to date and learns of their
    deletions. Each batch is one transaction; if the document turns out damaged
    part-way, the records before the damage are stored and ``ParseError`` is
    raised (a ``Deletion`` or record is never half-written).
    """
    known = stored_pmids(store) if known_only else None
    counts = LoadCounts(stored=BatchCounts())
    batch: list[Record] = []

    def flush() -> None:
        if batch:
            counts.stored.add(write_batch(store, batch, run_id=run_id, source="load"))
            batch.clear()
        if on_batch is not None:
            on_batch(counts)

    try:
        for record in iter_records(source, workers=workers):
            counts.read += 1
            if known is not None and record.pmid not in known:
                counts.skipped += 1
                continue
            batch.append(record)
            if len(batch) >= batch_size:
                flush()
    except ParseError:
        flush()  # what came before the damage is good
        raise
    flush()
    return counts
