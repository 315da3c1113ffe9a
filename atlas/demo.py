"""``atlas demo``: the real nightly flow, four nights in a row, on the bundled corpus.

A loopback fake E-utilities serves ``data/sample/pubmed`` with NCBI's rate
limit; each night moves "today" forward a month so successive windows pick up
different papers. Then the last night's whole window is fetched again (the
backfill flow) to show that a re-run over unchanged records stores nothing.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

from atlas.config import load_settings
from atlas.errors import ConfigError

DEMO_NIGHTS = (date(2025, 8, 31), date(2025, 9, 30), date(2025, 10, 31))


def run_demo(data_dir: Path, corpus: Path, console: Console) -> None:
    from atlas.fakes.eutils import FakeEutils
    from flows.nightly import backfill, nightly

    if not corpus.is_dir() or not any(corpus.glob("*.xml")):
        raise ConfigError(f"{corpus}: no demo corpus (run: python data/sample/build_sample.py)")
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    table = Table(title="demo: the nightly flow, night after night")
    for column in ("night", "window", "found", "new or revised", "unchanged", "scanned", "summarised", "status"):
        table.add_column(column, justify="left" if column in {"window", "status"} else "right", no_wrap=True)
    with FakeEutils(corpus, rate_limit=3.0) as fake:
        console.print(f"fake E-utilities on {fake.url} serving {corpus}")
        overrides = {"data_dir": str(data_dir), "eutils_url": fake.url, "ncbi_email": "demo@example.org"}
        load_settings(**overrides)  # fail fast on a bad setting before the engine starts
        for night in DEMO_NIGHTS:
            console.rule(f"nightly run as of {night}")
            counts = nightly(as_of=night, overrides=overrides)
            _add_row(table, str(night), counts)
        start, end = (date.fromisoformat(day) for day in counts["window"].split(".."))
        console.rule(f"the {end} night's window again: {start}..{end}")
        _add_row(table, "again", backfill(start=start, end=end, overrides=overrides))
    console.print(table)
    settings = load_settings(**overrides)
    show_evidence(settings.snapshot, console)
    console.print(f"database: {settings.database}   read-only snapshot: {settings.snapshot}")
    console.print(f"evidence pages: {settings.data_dir / 'pages' / 'index.html'}   "
                  f"Parquet: {settings.data_dir / 'export'}")
    console.print(f"try: .venv/bin/atlas status --data-dir {data_dir}")
    console.print(f"     .venv/bin/atlas sql --data-dir {data_dir} \"SELECT pmid, year, title FROM current_papers LIMIT 5\"")


def _add_row(table: Table, night: str, counts: dict) -> None:
    table.add_row(night, str(counts.get("window")), str(counts.get("found")),
                  str(counts.get("inserted")), str(counts.get("unchanged")),
                  str(counts.get("scan", {}).get("extracted")),
                  str(counts.get("generate", {}).get("generated")), str(counts.get("status")))


def show_evidence(snapshot: Path, console: Console) -> None:
    """What the run produced: the PEM badge counts and the papers whose badge is decided."""
    import duckdb

    with duckdb.connect(str(snapshot), read_only=True) as conn:
        badges = conn.execute(
            "SELECT coalesce(pem_label, 'not classified'), count(*) FROM evidence GROUP BY ALL ORDER BY 2 DESC"
        ).fetchall()
        decided = conn.execute(
            "SELECT pmid, criteria_names, pem_label, design, summary_status, versions FROM evidence "
            "WHERE pem IN ('required', 'not_required') ORDER BY pem, pmid LIMIT 12"
        ).fetchall()
    console.print("PEM badges: " + ", ".join(f"{label} {n}" for label, n in badges))
    table = Table(title="papers whose PEM badge is decided (every label has a verbatim quote: atlas show PMID)")
    for column in ("pmid", "criteria", "badge", "design", "summary", "versions"):
        table.add_column(column)
    for pmid, names, label, design, status, versions in decided:
        table.add_row(pmid, ", ".join(names or []), label, design, status, versions)
    console.print(table)
