"""Exports for analysts: the documented views as Parquet, CSV or JSON lines.

Reads only; files are written next to each other by write-then-rename so a
reader never sees half a file.
"""

from __future__ import annotations

import os
from pathlib import Path

from atlas.store.db import Store

EXPORTED_VIEWS = ("evidence", "current_papers", "classification_history", "summary_history", "run_summary",
                  "deleted_papers", "paper_failures")
FORMATS = {"parquet": "(FORMAT parquet, COMPRESSION zstd)", "csv": "(FORMAT csv, HEADER true)",
           "jsonl": "(FORMAT json)"}


def export_views(store: Store, out_dir: Path, fmt: str = "parquet",
                 views: tuple[str, ...] = EXPORTED_VIEWS) -> list[Path]:
    """Write each view to ``out_dir/<view>.<fmt>``; the raw XML column is left to the database."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for view in views:
        target = out_dir / f"{view}.{fmt}"
        tmp = target.with_name(f".{target.name}.tmp")
        query = f"SELECT * EXCLUDE (raw) FROM {view}" if view == "paper_failures" else f"SELECT * FROM {view}"
        path = str(tmp).replace("'", "''")
        store.conn.execute(f"COPY ({query}) TO '{path}' {FORMATS[fmt]}").fetchall()
        os.replace(tmp, target)
        written.append(target)
    return written


def evidence_rows(store: Store) -> list[dict]:
    """Every row of the ``evidence`` view as plain dicts (for the page renderer)."""
    cursor = store.conn.execute("SELECT * FROM evidence ORDER BY pmid")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def evidence_fingerprint(store: Store) -> str:
    """A hash of every evidence row: equal fingerprints mean the pages would come out the same."""
    row = store.conn.execute(
        "SELECT md5(coalesce(string_agg(to_json(e)::VARCHAR, chr(10) ORDER BY pmid), '')) FROM evidence e"
    ).fetchall()
    return row[0][0]
