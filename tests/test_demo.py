"""`atlas demo` (what `make demo` runs): three nights, then the last night's window again, which stores nothing."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
from rich.console import Console

from atlas.demo import run_demo

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample" / "pubmed"


def test_demo_nights_pick_up_different_papers_and_the_repeat_stores_nothing(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    run_demo(tmp_path / "demo", SAMPLE, console)
    rows = {}
    for line in console.export_text().splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃]", line)[1:-1]]
        if len(cells) == 8 and re.fullmatch(r"\d{4}-\d\d-\d\d|again", cells[0]):
            rows[cells[0]] = cells[1:]
    assert list(rows) == ["2025-08-31", "2025-09-30", "2025-10-31", "again"]
    assert rows["again"][0] == rows["2025-10-31"][0]  # the same window
    window, found, new, unchanged, scanned, summarised, status = rows["again"]
    assert int(found) > 20 and (new, unchanged, scanned, summarised, status) == ("0", found, "0", "0", "completed")
    stored = sum(int(row[2]) for night, row in rows.items() if night != "again")
    with duckdb.connect(str(tmp_path / "demo" / "atlas.snapshot.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM current_papers").fetchone()[0] == stored
    assert (tmp_path / "demo" / "pages" / "index.html").is_file()
