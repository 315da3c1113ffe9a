"""Unchanged re-run benchmark: the real nightly flow twice over the same data.

The first run fetches, stores, scans and summarises every record in a 30-day
window; the second, over unchanged data, must write 0 rows, and its pipeline
time (Prefect engine start excluded: the engine is warmed up first) must be
< 20 % of the first run's. A third pass re-runs the *whole* window as a
backfill, which refetches everything, to show what skipping unchanged content
saves even then.

    .venv/bin/python bench/bench_rerun.py [--records 3000] [--rate 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import duckdb  # noqa: E402
from prefect import flow  # noqa: E402

from atlas.fakes.eutils import FakeEutils, write_synthetic_corpus  # noqa: E402
from flows.nightly import backfill, nightly  # noqa: E402

TABLES = ("papers", "records", "extractions", "classifications", "summaries", "paper_failures")
START = date(2025, 6, 1)
DAYS = 30


@flow(name="warm-up")
def warm_up() -> None:
    """Starts the ephemeral engine so no timed run pays for it."""


def rows(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as conn:
        return sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=3.0, help="requests/s (NCBI's limit without a key)")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="atlas-bench-prefect-"))
    with tempfile.TemporaryDirectory() as tmp:
        corpus, data = Path(tmp) / "corpus", Path(tmp) / "data"
        write_synthetic_corpus(corpus, args.records, start=START, days=DAYS, revised_every=0 or 10**9,
                               revised_after_days=0)
        warm_up()
        as_of = START + timedelta(days=DAYS)
        with FakeEutils(corpus, rate_limit=args.rate) as fake:
            settings = {"data_dir": str(data), "eutils_url": fake.url, "ncbi_email": "bench@example.org",
                        "requests_per_second": args.rate, "first_run_days": DAYS + 1}
            timings = []
            for label, run in (("first run", lambda: nightly(as_of=as_of, overrides=settings)),
                               ("unchanged re-run", lambda: nightly(as_of=as_of, overrides=settings)),
                               ("whole-window re-run (backfill)",
                                lambda: backfill(start=START, end=as_of, overrides=settings))):
                before = rows(data / "atlas.duckdb") if (data / "atlas.duckdb").exists() else 0
                began = time.perf_counter()
                counts = run()
                elapsed = time.perf_counter() - began
                written = rows(data / "atlas.duckdb") - before
                timings.append(elapsed)
                print(f"{label}: {elapsed:.2f} s, found {counts['found']}, rows written {written} "
                      f"(papers {counts['inserted']}, extracted {counts['scan']['extracted']}, "
                      f"summarised {counts['generate']['generated']}), requests {counts['requests']}")
    print(f"unchanged re-run / first run = {timings[1] / timings[0]:.3f} (target < 0.20)")
    print(f"whole-window re-run / first run = {timings[2] / timings[0]:.3f}")


if __name__ == "__main__":
    main()
