"""Re-classify 100,000 stored papers under a new policy, end to end through a real DuckDB file (< 10 s).

    python bench/bench_reclassify.py [--papers 100000] [--keep DIR]

Setup (not timed): papers and their extractions are written to a fresh DuckDB file, facts
coming from the rule extractor run over the labelled development set (cycled), and v0.1
decisions are stored. Timed: ``reclassify_all`` under a stricter v0.2 policy (Fukuda requires
PEM): load every current extraction from the database, decide, write 100,000 classification
rows. The LLM client handed to the run raises on any use, and the call counter proves 0 calls.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from atlas.store import Store
from atlas.store.papers import PAPER_SCHEMA
from atlas.store.runs import utcnow
from scanner.extract import Extractor
from scanner.facts import PaperText
from scanner.pipeline import decide_pending, extraction_row, reclassify_all
from scanner.policy import load_policy, parse_policy

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "tests" / "labels"


class ForbiddenLLM:
    """Replaces the LLM client while timing: counts any construction or call and refuses it."""

    calls = 0

    def __init__(self, *args, **kwargs) -> None:
        ForbiddenLLM.calls += 1
        raise AssertionError("reclassification built an LLM client")

    def complete_json(self, **kwargs):
        ForbiddenLLM.calls += 1
        raise AssertionError("reclassification called the LLM")


def seed(store: Store, n: int) -> None:
    extractor = Extractor()
    texts = []
    for name in ("dev.jsonl", "holdout.jsonl"):
        for line in (LABELS / name).read_text("utf-8").splitlines():
            row = json.loads(line)
            texts.append(PaperText.from_fields(title=row["title"], abstract=row.get("abstract"),
                                               methods=row.get("methods"), year=row.get("year")))
    facts = [extractor.extract(t) for t in texts]
    papers = {name: [] for name in PAPER_SCHEMA.names}
    extractions = {name: [] for name in ("extraction_id", "pmid", "content_hash", "scanner_version", "extractor",
                                         "text_hash", "sources", "facts")}
    for i in range(n):
        k = i % len(texts)
        pmid, chash = str(10_000_000 + i), f"hash{i}"
        for name in PAPER_SCHEMA.names:
            papers[name].append(None)
        papers["pmid"][-1], papers["content_hash"][-1] = pmid, chash
        papers["title"][-1], papers["abstract"][-1] = texts[k].title, texts[k].abstract
        for key, value in extraction_row(pmid, chash, texts[k], facts[k]).items():
            extractions[key].append(value)
    now = utcnow()
    store.conn.register("p", pa.Table.from_pydict(papers, schema=PAPER_SCHEMA))
    cols = ", ".join(f'"{c}"' for c in PAPER_SCHEMA.names if c != "raw")
    store.conn.execute(f"INSERT INTO papers ({cols}, fetched_at) SELECT {cols}, ? FROM p", [now])
    store.conn.register("e", pa.Table.from_pydict(extractions))
    store.conn.execute("INSERT INTO extractions (extraction_id, pmid, content_hash, scanner_version, extractor, "
                       "text_hash, sources, facts, created_at) SELECT *, ? FROM e", [now])
    store.conn.unregister("p")
    store.conn.unregister("e")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--papers", type=int, default=100_000)
    parser.add_argument("--keep", type=Path, default=None, help="Keep the database in this folder.")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-reclassify-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "bench.duckdb"
    db.unlink(missing_ok=True)
    v01 = load_policy(ROOT / "policies" / "v0.1.yaml")
    v02 = parse_policy((ROOT / "policies" / "v0.1.yaml").read_text("utf-8").replace('version: "0.1"', 'version: "0.2"')
                       .replace("    requires_pem: false\n    reason: \"PEM over 24 hours",
                                "    requires_pem: true\n    reason: \"PEM over 24 hours").encode(), source="v0.2")
    import generator.llm

    real_client = generator.llm.LLMClient
    generator.llm.LLMClient = ForbiddenLLM  # any LLM use during the run is counted and fails it
    llm = ForbiddenLLM
    try:
        with Store.open(db) as store:
            t0 = time.perf_counter()
            seed(store, args.papers)
            decided = decide_pending(store, v01, run_id="seed")
            print(f"setup: {args.papers:,} papers and extractions, {decided:,} v0.1 decisions in "
                  f"{time.perf_counter() - t0:.1f} s")
        began = time.perf_counter()
        with Store.open(db) as store:  # end to end: open the file, load, decide, write
            counts = reclassify_all(store, v02, run_id="bench")
        seconds = time.perf_counter() - began
        with Store.open(db) as store:
            current = store.conn.execute("SELECT policy_version, count(*) FROM current_classifications GROUP BY 1").fetchall()
        print(f"reclassified {counts['decided']:,} papers under policy v0.2 in {seconds:.2f} s "
              f"(load {counts['seconds_load']} s, decide {counts['seconds_decide']} s, write {counts['seconds_write']} s); "
              f"changed PEM badge on {counts['changed_pem']:,}; current classifications {current}; "
              f"LLM calls: {llm.calls}; target < 10 s: {'OK' if seconds < 10 and llm.calls == 0 else 'MISSED'}")
    finally:
        generator.llm.LLMClient = real_client
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
