"""Store benchmark: 100,000 papers into a real DuckDB file, in batches, through Arrow.

Target: >= 50,000 rows/s. Each paper writes two rows (``records`` with the raw
XML, ``papers`` with the parsed fields); the figures are printed both per paper
and per row. Also times re-storing the same 100,000 papers, which must write 0
rows. Papers are the parser's own output for the real demo-corpus records
(each distinct record parsed once, then given new PMIDs, raw XML and hashes);
their raw XML (about 3 kB each, no reference lists) is bytes, as the parser
gives it. Each timed load ends with an explicit CHECKPOINT, so work DuckDB
defers to a later checkpoint is counted too. The nightly flow writes batches of
``ATLAS_BATCH_SIZE`` (200 by default); ``--batch 200`` measures that path.

    .venv/bin/python bench/bench_store.py [--papers 100000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "data" / "sample"))

from build_sample import article_xml  # noqa: E402

from atlas.models import Paper, content_hash  # noqa: E402
from atlas.pubmed.parse import iter_records  # noqa: E402
from atlas.store import Store  # noqa: E402
from atlas.store.papers import write_batch  # noqa: E402

TARGET_ROWS_PER_S = 50_000
ROWS_PER_PAPER = 2  # one in records, one in papers


def papers(total: int) -> list[Paper]:
    """``total`` parsed papers: the demo records round-robin, each copy with its own PMID, raw XML and hash."""
    records = [json.loads(line) for line in (REPO / "data/sample/records.jsonl").read_text().splitlines()]
    added = date(2025, 9, 1)
    document = "<PubmedArticleSet>" + "".join(article_xml(r, added) for r in records) + "</PubmedArticleSet>"
    parsed = list(iter_records(document.encode("utf-8")))
    assert len(parsed) == len(records) and all(isinstance(p, Paper) for p in parsed), "demo records must parse"
    out = []
    for i in range(total):
        record = dict(records[i % len(records)])
        record["pmid"] = str(40_000_000 + i)
        raw = article_xml(record, added).encode("utf-8")  # the parser hands over bytes
        out.append(dataclasses.replace(parsed[i % len(records)], pmid=record["pmid"], raw_xml=raw,
                                       content_hash=content_hash(raw)))
    return out


def _rows(store: Store) -> int:
    """Rows in the two tables a paper writes to."""
    return store.conn.execute("SELECT (SELECT count(*) FROM records) + (SELECT count(*) FROM papers)").fetchone()[0]


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
            rows_before = _rows(store)
            start = time.perf_counter()
            for offset in range(0, len(data), args.batch):
                written += write_batch(store, data[offset:offset + args.batch], run_id=label).inserted
            checkpoint_start = time.perf_counter()
            store.conn.execute("CHECKPOINT")
            elapsed = time.perf_counter() - start
            rows = _rows(store) - rows_before
            print(f"{label}: {len(data):,} papers ({raw_mb:.0f} MB raw XML) in batches of {args.batch:,} "
                  f"in {elapsed:.2f} s (final checkpoint {time.perf_counter() - checkpoint_start:.2f} s) = "
                  f"{len(data) / elapsed:,.0f} papers/s; papers stored: {written:,}, "
                  f"rows written: {rows:,} ({rows / elapsed:,.0f} rows/s)")
        stored = store.conn.execute("SELECT count(*) FROM current_papers").fetchone()[0]
        store.conn.execute("CHECKPOINT")
        size_mb = (Path(tmp) / "bench.duckdb").stat().st_size / 1e6
    print(f"papers in current_papers: {stored:,}, file {size_mb:.0f} MB (batch size {args.batch:,}; "
          f"target >= {TARGET_ROWS_PER_S:,} rows/s on first load, i.e. {TARGET_ROWS_PER_S // ROWS_PER_PAPER:,} papers/s; "
          f"{TARGET_ROWS_PER_S:,} papers/s would be {TARGET_ROWS_PER_S * ROWS_PER_PAPER:,} rows/s)")


if __name__ == "__main__":
    main()
