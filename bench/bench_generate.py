"""Generator throughput, idempotence and resilience against the loopback fake OpenAI server.

Loads the demo corpus (real abstracts, cloned to ``--papers`` distinct papers)
into a temporary DuckDB file and runs ``generate_pending`` three ways:

(a) throughput: every reply takes ``--latency`` seconds (300 ms) and the client
    runs ``--concurrency`` (8) calls at once. Ideal rate = concurrency / latency
    (26.7 req/s); target >= 0.8 of it. Prints measured req/s and the ratio.
(b) an unchanged re-run: prints the number of calls (target 0).
(c) resilience: 20% of replies are 429 (with Retry-After) or 500, chosen by a
    seeded RNG, with few retries allowed so some papers run out of them. Every
    paper must end ``ok`` or an explicit ``failed`` row; a re-run with the faults
    gone must complete the failed ones. Prints the counts.
(d) the offline extractive backend over the same papers: papers per second
    (generate, check and store; no target, a figure to watch).

    .venv/bin/python bench/bench_generate.py [--papers 240] [--latency 0.3] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from atlas.config import Settings
from atlas.fakes.openai_server import FakeOpenAIServer
from atlas.models import Paper, content_hash
from atlas.store import Store
from atlas.store.papers import write_batch
from generator.pipeline import generate_pending

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "data" / "sample" / "records.jsonl"


def corpus_papers(count: int) -> list[Paper]:
    """Real abstracts from the demo corpus, cloned under new PMIDs until there are ``count`` papers."""
    rows = [json.loads(line) for line in CORPUS.read_text("utf-8").splitlines()]
    rows = [r for r in rows if r.get("abstract")]
    papers = []
    for index in range(count):
        row = rows[index % len(rows)]
        copy = index // len(rows)
        pmid = row["pmid"] if copy == 0 else f"{row['pmid']}{copy:02d}"
        raw = json.dumps({**row, "pmid": pmid}, sort_keys=True)
        papers.append(Paper(pmid=pmid, title=row["title"], abstract=row["abstract"], raw_xml=raw,
                            content_hash=content_hash(raw)))
    return papers


def fresh_store(directory: Path, name: str, papers: list[Paper]) -> Store:
    store = Store.open(directory / f"{name}.duckdb")
    write_batch(store, papers, run_id="load")
    return store


def settings_for(store: Store, fake: FakeOpenAIServer, **overrides) -> Settings:
    values = dict(db_path=store.path, llm_base_url=fake.base_url, llm_model="fake-model", llm_api_key="bench-key",
                  llm_prices={"fake-model": {"input": 0.15, "output": 0.6}}, llm_timeout=10.0)
    values.update(overrides)
    return Settings(**values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--papers", type=int, default=240)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fail-fraction", type=float, default=0.2)
    args = parser.parse_args()
    papers = corpus_papers(args.papers)
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp, FakeOpenAIServer() as fake:
        directory = Path(tmp)

        # (a) throughput
        store = fresh_store(directory, "throughput", papers)
        fake.set_latency(args.latency)
        settings = settings_for(store, fake, llm_concurrency=args.concurrency)
        started = time.perf_counter()
        counts = generate_pending(store, settings, run_id="throughput")
        elapsed = time.perf_counter() - started
        rate = fake.requests / elapsed
        ideal = args.concurrency / args.latency
        ratio = rate / ideal
        print(f"(a) throughput: {fake.requests} calls in {elapsed:.2f}s = {rate:.1f} req/s; "
              f"ideal {ideal:.1f} req/s; ratio {ratio:.2f} (target >= 0.80); "
              f"max in flight {fake.counts().get('max_in_flight')}; ok {counts['ok']}, flagged {counts['flagged']}, "
              f"cost ${counts['cost_usd']:.4f}")
        ok &= ratio >= 0.8 and counts["ok"] + counts["flagged"] == args.papers

        # (b) unchanged re-run
        fake.reset_counts()
        again = generate_pending(store, settings, run_id="rerun")
        print(f"(b) unchanged re-run: {fake.requests} calls, {again['generated']} generated, "
              f"{again['skipped_existing']} skipped (target 0 calls)")
        ok &= fake.requests == 0 and again["generated"] == 0
        store.close()

        # (c) resilience: 20% of replies are 429 or 500
        store = fresh_store(directory, "resilience", papers)
        fake.reset_counts()
        fake.set_latency(0.02)
        fake.fail_fraction(args.fail_fraction, statuses=(429, 500), seed=20, retry_after=0.05)
        settings = settings_for(store, fake, llm_concurrency=args.concurrency, llm_max_retries=1)
        first = generate_pending(store, settings, run_id="faulty", llm_options={"backoff_base": 0.05})
        injected = fake.counts()
        faults = injected.get("status_429", 0) + injected.get("status_500", 0)
        accounted = first["ok"] + first["flagged"] + first["failed"] + first["invalid"]
        print(f"(c) with {args.fail_fraction:.0%} faults: {injected.get('chat_requests', 0)} requests, "
              f"{injected.get('status_429', 0)} x 429 + {injected.get('status_500', 0)} x 500 "
              f"({faults / max(1, injected.get('chat_requests', 1)):.0%}); papers: ok {first['ok']}, "
              f"flagged {first['flagged']}, failed {first['failed']} (explicit rows), invalid {first['invalid']}; "
              f"accounted {accounted}/{args.papers}")
        failure_rows = store.conn.execute(
            "SELECT count(*) FROM paper_failures WHERE run_id = 'faulty' AND stage = 'generate'").fetchone()[0]
        ok &= accounted == args.papers and failure_rows == first["failed"]
        fake.clear_faults()
        fake.reset_counts()
        second = generate_pending(store, settings, run_id="recover", llm_options={"backoff_base": 0.05})
        current = dict(store.conn.execute("SELECT status, count(*) FROM current_summaries GROUP BY ALL").fetchall())
        print(f"    re-run without faults: {fake.requests} calls, generated {second['generated']} "
              f"(ok {second['ok']}, failed {second['failed']}); current summaries {current}")
        ok &= second["generated"] == first["failed"] and current.get("failed", 0) == 0
        ok &= sum(current.values()) == args.papers
        store.close()

        # (d) offline extractive backend
        store = fresh_store(directory, "extractive", papers)
        started = time.perf_counter()
        offline = generate_pending(store, Settings(db_path=store.path), run_id="offline")
        elapsed = time.perf_counter() - started
        print(f"(d) extractive backend: {offline['generated']} papers in {elapsed:.2f}s = "
              f"{offline['generated'] / elapsed:.0f} papers/s (ok {offline['ok']}, flagged {offline['flagged']})")
        store.close()
    print("all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
