"""Store benchmark: 100,000 papers into a real DuckDB file, in batches, through Arrow.

Target: >= 50,000 rows/s. Also times re-storing the same 100,000 papers, which
must write 0 rows. Papers are real demo-corpus records with new PMIDs; their
raw XML (about 3 kB each, no reference lists) is bytes, as the parser gives it.
Each timed load ends with an explicit CHECKPOINT, so work DuckDB defers to a
later checkpoint is counted too. The nightly flow writes batches of
``ATLAS_BATCH_SIZE`` (200 by default); ``--batch 200`` measures that path.

    .venv/bin/python bench/bench_store.py [--papers 100000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "data" / "sample"))

from build_sample import article_xml  # noqa: E402

from atlas.models import Author, Paper, content_hash  # noqa: E402
from atlas.store import Store  # noqa: E402
from atlas.store.papers import write_batch  # noqa: E402


def papers(total: int) -> list[Paper]:
    records = [json.loads(line) for line in (REPO / "data/sample/records.jsonl").read_text().splitlines()]
    out = []
    for i in range(total):
        record = dict(records[i % len(records)])
        record["pmid"] = str(40_000_000 + i)
        raw = article_xml(record, date(2025, 9, 1)).encode("utf-8")  # the parser hands over bytes
        out.append(Paper(
            pmid=record["pmid"], title=record["title"], title_markup=record["title"], abstract=record["abstract"],
            abstract_markup=record["abstract"], year=record["year"], doi=record["doi"], journal=record["journal"],
            authors=[Author(last=a.get("last"), fore=a.get("fore"), collective=a.get("collective"))
                     for a in record["authors"]],
            publication_types=record["publication_types"] or ["Journal Article"], languages=["eng"],
            entrez_date=date(2025, 9, 1), raw_xml=raw, content_hash=content_hash(raw),
        ))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    args = parser.parse_args()
    data = papers(args.papers)
    raw_mb = sum(len(p.raw_xml) for p in data) / 1e6
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "bench.duckdb") as store:
        for label in ("first load", "unchanged re-load"):
            written = 0
            start = time.perf_counter()
            for offset in range(0, len(data), args.batch):
                written += write_batch(store, data[offset:offset + args.batch], run_id=label).inserted
            checkpoint_start = time.perf_counter()
            store.conn.execute("CHECKPOINT")
            elapsed = time.perf_counter() - start
            print(f"{label}: {len(data):,} papers ({raw_mb:.0f} MB raw XML) in batches of {args.batch:,} "
                  f"in {elapsed:.2f} s (final checkpoint {time.perf_counter() - checkpoint_start:.2f} s) = "
                  f"{len(data) / elapsed:,.0f} papers/s; rows written: {written:,}")
        stored = store.conn.execute("SELECT count(*) FROM current_papers").fetchone()[0]
    print(f"papers in current_papers: {stored:,} (batch size {args.batch:,}; target >= 50,000 papers/s on first load)")


if __name__ == "__main__":
    main()
