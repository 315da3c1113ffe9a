"""Generator rows: summaries and LLM calls (writes), and the reads the generator needs.

Rows arrive as plain dicts so the store does not depend on the generator
package. Writes are batched: one transaction holds a batch of summaries, the
LLM calls behind them and a ``paper_failures`` row for each failed summary.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from atlas.store.db import Store, append_arrow, registered
from atlas.store.runs import utcnow

SUMMARY_SCHEMA = pa.schema([
    ("pmid", pa.string()),
    ("content_hash", pa.string()),
    ("input_hash", pa.string()),
    ("generator_version", pa.string()),
    ("prompt_hash", pa.string()),
    ("checks_version", pa.string()),
    ("backend", pa.string()),
    ("model", pa.string()),
    ("fields", pa.string()),
    ("checks", pa.string()),
    ("status", pa.string()),
    ("reasons", pa.list_(pa.string())),
    ("error", pa.string()),
    ("labels", pa.string()),
    ("input_tokens", pa.int32()),
    ("output_tokens", pa.int32()),
    ("cost_usd", pa.float64()),
    ("latency_s", pa.float64()),
    ("attempts", pa.int32()),
    ("raw_response", pa.string()),
])

CALL_SCHEMA = pa.schema([
    ("call_id", pa.string()),
    ("purpose", pa.string()),
    ("pmid", pa.string()),
    ("model", pa.string()),
    ("attempt", pa.int32()),
    ("request", pa.string()),
    ("response_raw", pa.string()),
    ("status", pa.string()),
    ("http_status", pa.int32()),
    ("error", pa.string()),
    ("input_tokens", pa.int32()),
    ("output_tokens", pa.int32()),
    ("cost_usd", pa.float64()),
    ("latency_s", pa.float64()),
    ("started_at", pa.timestamp("us", tz="UTC")),
])

_JSON_COLUMNS = {"fields", "checks", "labels", "request"}


def _json(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _table(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for row in rows:
        for name in schema.names:
            value = row.get(name)
            columns[name].append(_json(value) if name in _JSON_COLUMNS else value)
    return pa.Table.from_pydict(columns, schema=schema)


def relation_exists(store: Store, name: str) -> bool:
    """True when a table or view of that name exists (tables of other stages may not be migrated yet)."""
    row = store.conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchone()
    return bool(row and row[0])


def _columns(store: Store, name: str) -> set[str]:
    rows = store.conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [name]
    ).fetchall()
    return {r[0] for r in rows}


def papers_to_summarise(store: Store, *, pmids: Sequence[str] | None = None,
                        since: date | datetime | None = None) -> list[dict[str, Any]]:
    """Current papers with their text, scanner labels and methods (when those stages have run).

    ``since`` keeps papers whose current content was fetched on or after that date.
    """
    select = ["p.pmid", "p.content_hash", "p.title", "p.abstract"]
    if "abstract_sections" in _columns(store, "current_papers"):
        select.append("p.abstract_sections")
    joins: list[str] = []
    if relation_exists(store, "current_classifications") and {
        "pmid", "criteria", "pem", "design", "evidence_level"
    } <= _columns(store, "current_classifications"):
        select += ["c.design", "c.pem", "c.evidence_level", "c.criteria"]
        joins.append("LEFT JOIN current_classifications c ON c.pmid = p.pmid")
    else:
        select += ["NULL AS design", "NULL AS pem", "NULL AS evidence_level", "NULL AS criteria"]
    if relation_exists(store, "current_fulltexts") and "methods" in _columns(store, "current_fulltexts"):
        select.append("f.methods")
        joins.append("LEFT JOIN current_fulltexts f ON f.pmid = p.pmid")
    else:
        select.append("NULL AS methods")
    where: list[str] = []
    params: list[Any] = []
    if pmids is not None:
        where.append("p.pmid IN (SELECT unnest(?::VARCHAR[]))")
        params.append(list(pmids))
    if since is not None:
        where.append("p.fetched_at >= ?")
        params.append(since)
    sql = f"SELECT {', '.join(select)} FROM current_papers p {' '.join(joins)}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY p.pmid"
    cursor = store.conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def done_keys(store: Store, pmids: Iterable[str] | None = None) -> set[tuple[str, str, str, str]]:
    """(pmid, input_hash, generator_version, model) of every summary that needs no new call.

    A failed row does not count: the next run tries that paper again.
    """
    sql = "SELECT DISTINCT pmid, input_hash, generator_version, model FROM summaries WHERE status <> 'failed'"
    params: list[Any] = []
    if pmids is not None:
        sql += " AND pmid IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(pmids))
    return {tuple(row) for row in store.conn.execute(sql, params).fetchall()}  # type: ignore[misc]


def write_summaries(store: Store, summaries: Sequence[dict[str, Any]], calls: Sequence[dict[str, Any]] = (), *,
                    run_id: str | None) -> None:
    """Append a batch of summaries and the LLM calls behind them, in one transaction.

    Each failed summary also becomes a ``paper_failures`` row (stage ``generate``).
    """
    if not summaries and not calls:
        return
    now = utcnow()
    with store.transaction() as conn:
        if summaries:
            table = _table(summaries, SUMMARY_SCHEMA)
            append_arrow(conn, "summaries", table, {"created_at": now, "run_id": run_id})
            with registered(conn, "failed_summaries", table.filter(pc.equal(table["status"], "failed"))) as view:
                conn.execute(
                    "INSERT INTO paper_failures (run_id, pmid, stage, error, raw, failed_at) "
                    f"SELECT ?, pmid, 'generate', coalesce(error, 'generation failed'), raw_response, ? FROM {view}",
                    [run_id, now],
                ).fetchall()
        if calls:
            append_arrow(conn, "llm_calls", _table(calls, CALL_SCHEMA), {"run_id": run_id})


def write_llm_calls(store: Store, calls: Sequence[dict[str, Any]], *, run_id: str | None) -> None:
    """Append LLM call records made outside summary generation (e.g. the scanner's LLM extractor)."""
    write_summaries(store, (), calls, run_id=run_id)


def run_costs(store: Store, run_id: str) -> dict[str, Any]:
    """Calls, tokens and cost a run spent at LLM endpoints."""
    row = store.conn.execute(
        "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
        "coalesce(sum(cost_usd), 0) FROM llm_calls WHERE run_id = ?",
        [run_id],
    ).fetchone()
    return {"llm_calls": row[0], "input_tokens": row[1], "output_tokens": row[2], "cost_usd": round(row[3], 6)}
