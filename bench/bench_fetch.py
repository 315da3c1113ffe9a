"""Fetch throughput under NCBI's rate limit, against the loopback fake E-utilities.

Builds a synthetic corpus (5,000 records by default), serves it at 3 requests
per second, and fetches everything through ``EutilsClient`` at 3 per second:
an edat and an mdat ESearch pass over the window, then EFetch POST batches of
200. Prints wall time, the ideal time the rate allows (requests / rate), the
ratio ideal/actual (target >= 0.9), the 429s the fake sent (target 0) and
whether every record arrived.

    .venv/bin/python bench/bench_fetch.py [--records 5000] [--rate 3] [--cap 9999]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from lxml import etree

from atlas.config import DEFAULT_QUERY, Settings
from atlas.fakes.eutils import FakeEutils, write_synthetic_corpus
from atlas.ingest import Window, find_pmids
from atlas.pubmed.client import EutilsClient


def count_records(body: bytes) -> list[str]:
    root = etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True))
    return [el.text for el in root.iterfind("PubmedArticle/MedlineCitation/PMID")]


def run(records: int, rate: float, batch_size: int, cap: int) -> dict[str, float]:
    start_day, days = date(2024, 1, 1), 365
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as folder:
        built = time.perf_counter()
        written = write_synthetic_corpus(Path(folder), records, start=start_day, days=days)
        build_seconds = time.perf_counter() - built
        with FakeEutils(folder, rate_limit=rate, search_cap=cap) as fake:
            settings = Settings(eutils_url=fake.url, ncbi_email="bench@example.org", requests_per_second=rate,
                                batch_size=batch_size)
            with EutilsClient(settings, search_cap=cap) as client:
                began = time.perf_counter()
                pmids = find_pmids(client, DEFAULT_QUERY, Window(start_day, start_day + timedelta(days=days)))
                searched = time.perf_counter()
                fetched: list[str] = []
                body_bytes = 0
                for _, body in client.iter_efetch_batches(pmids):
                    fetched.extend(count_records(body))
                    body_bytes += len(body)
                wall = time.perf_counter() - began
                stats = client.stats()
            sent_429 = fake.sent_429
            busiest_second = fake.max_requests_in_any_second()
    ideal = stats["requests"] / rate
    return {
        "records": records,
        "build_seconds": build_seconds,
        "found": len(pmids),
        "fetched": len(set(fetched)),
        "lost": len(set(written) - set(fetched)),
        "requests": stats["requests"],
        "retries": stats["retries"],
        "search_seconds": searched - began,
        "wall_seconds": wall,
        "ideal_seconds": ideal,
        "ratio": ideal / wall,
        "strict_ratio": (stats["requests"] - 1) / rate / wall,
        "sent_429": sent_429,
        "busiest_second": busiest_second,
        "megabytes": body_bytes / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--cap", type=int, default=9_999, help="ESearch cap of the fake and the client")
    args = parser.parse_args()
    result = run(args.records, args.rate, args.batch_size, args.cap)
    print(f"corpus: {result['records']} synthetic records written in {result['build_seconds']:.2f} s")
    print(f"search: {result['found']} PMIDs (edat + mdat passes) in {result['search_seconds']:.2f} s")
    print(f"fetch:  {result['fetched']} records, {result['megabytes']:.1f} MB, lost {result['lost']}")
    print(f"requests: {result['requests']} ({result['retries']} retries), busiest second at the fake: "
          f"{result['busiest_second']} (limit {args.rate:g})")
    print(f"wall time: {result['wall_seconds']:.2f} s   ideal at {args.rate:g}/s: {result['ideal_seconds']:.2f} s   "
          f"ideal/actual: {result['ratio']:.3f} (target >= 0.9)")
    print(f"strict ideal/actual, first request free ((requests - 1) / rate): {result['strict_ratio']:.3f}")
    print(f"429s sent by the fake: {result['sent_429']} (target 0)")


if __name__ == "__main__":
    main()
