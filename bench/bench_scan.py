"""Extraction throughput on one core: papers per second through the rule extractor (target >= 2,000).

    python bench/bench_scan.py [--papers 20000]

The corpus is the labelled development set (real ME/CFS titles and abstracts plus the hard
cases), cycled to the requested size; each paper is extracted from scratch (sentence split,
every pattern), as the nightly scan does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scanner.extract import SCANNER_VERSION, Extractor
from scanner.facts import PaperText

LABELS = Path(__file__).resolve().parent.parent / "tests" / "labels"


def corpus() -> list[PaperText]:
    papers = []
    for name in ("dev.jsonl", "holdout.jsonl"):
        for line in (LABELS / name).read_text("utf-8").splitlines():
            row = json.loads(line)
            papers.append(PaperText.from_fields(title=row["title"], abstract=row.get("abstract"),
                                                methods=row.get("methods"), publication_types=row["publication_types"],
                                                year=row.get("year")))
    return papers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=20_000)
    args = parser.parse_args()
    base = corpus()
    papers = [base[i % len(base)] for i in range(args.papers)]
    chars = sum(len(p.title) + len(p.abstract) + len(p.methods) for p in papers) / len(papers)
    extractor = Extractor()
    for paper in base:  # warm up
        extractor.extract(paper)
    began = time.perf_counter()
    facts = 0
    for paper in papers:
        facts += len(extractor.extract(paper).all_quoted())
    seconds = time.perf_counter() - began
    rate = len(papers) / seconds
    print(f"scanner {SCANNER_VERSION}: extracted {len(papers):,} papers (mean {chars:,.0f} chars, {facts:,} facts) "
          f"in {seconds:.2f} s on one core = {rate:,.0f} papers/s (target >= 2,000): "
          f"{'OK' if rate >= 2000 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
