"""Run rows, watermarks and per-paper failure rows."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime, timezone
from typing import Any

from atlas.store.db import Store


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def start_run(store: Store, flow: str, *, parameters: dict[str, Any] | None = None,
              versions: dict[str, str] | None = None, run_id: str | None = None) -> str:
    """Record that a run began. A run with no result row later reads as interrupted."""
    run_id = run_id or uuid.uuid4().hex
    store.conn.execute(
        "INSERT INTO runs (run_id, flow, started_at, parameters, versions) VALUES (?, ?, ?, ?, ?)",
        [run_id, flow, utcnow(), json.dumps(parameters or {}, default=str), json.dumps(versions or {})],
    )
    return run_id


def finish_run(store: Store, run_id: str, *, status: str, counts: dict[str, Any] | None = None,
               error: str | None = None) -> None:
    store.conn.execute(
        "INSERT INTO run_results (run_id, ended_at, status, counts, error) VALUES (?, ?, ?, ?, ?)",
        [run_id, utcnow(), status, json.dumps(counts or {}, default=str), error],
    )


def get_watermark(store: Store, name: str) -> date | None:
    row = store.conn.execute("SELECT value FROM current_watermarks WHERE name = ?", [name]).fetchone()
    return row[0] if row else None


def set_watermark(store: Store, name: str, value: date, *, run_id: str | None) -> None:
    """Advance (or set) a watermark. Called only after the data it covers is committed."""
    store.conn.execute(
        "INSERT INTO watermarks (name, value, run_id, set_at) VALUES (?, ?, ?, ?)",
        [name, value, run_id, utcnow()],
    )


def record_failure(store: Store, *, run_id: str | None, pmid: str | None, stage: str, error: str,
                   raw: str | None = None) -> None:
    store.conn.execute(
        "INSERT INTO paper_failures (run_id, pmid, stage, error, raw, failed_at) VALUES (?, ?, ?, ?, ?, ?)",
        [run_id, pmid, stage, error, raw, utcnow()],
    )


def recent_runs(store: Store, limit: int = 10) -> list[dict[str, Any]]:
    cursor = store.conn.execute(
        "SELECT run_id, flow, started_at, ended_at, status, counts, error FROM run_summary "
        "ORDER BY started_at DESC LIMIT ?",
        [limit],
    )
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def run_failures(store: Store, run_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The first failure rows a run wrote (stage, PMID, error), for its report."""
    cursor = store.conn.execute(
        "SELECT stage, pmid, error FROM paper_failures WHERE run_id = ? ORDER BY failed_at LIMIT ?", [run_id, limit])
    return [{"stage": stage, "pmid": pmid, "error": error} for stage, pmid, error in cursor.fetchall()]
