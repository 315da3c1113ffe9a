"""Scanner reads and writes: full texts, extractions and classifications.

Writes are bulk inserts of Arrow tables, one transaction per batch, append-only.
The scanner never runs SQL itself; it calls these functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from atlas.store.db import Store, append_arrow
from atlas.store.runs import utcnow

_STRINGS = pa.list_(pa.string())
_EVIDENCE = pa.list_(pa.struct([("label", pa.string()), ("quote", pa.string()), ("source", pa.string())]))

FULLTEXT_SCHEMA = pa.schema([("pmid", pa.string()), ("pmcid", pa.string()), ("methods", pa.string()),
                             ("content_hash", pa.string())])
EXTRACTION_SCHEMA = pa.schema([
    ("extraction_id", pa.string()), ("pmid", pa.string()), ("content_hash", pa.string()),
    ("scanner_version", pa.string()), ("extractor", pa.string()), ("text_hash", pa.string()),
    ("sources", _STRINGS), ("facts", pa.string()),
])
CLASSIFICATION_SCHEMA = pa.schema([
    ("pmid", pa.string()), ("extraction_id", pa.string()), ("scanner_version", pa.string()),
    ("policy_version", pa.string()), ("policy_hash", pa.string()), ("criteria", _STRINGS), ("pem", pa.string()),
    ("design", pa.string()), ("evidence_level", pa.string()), ("population", _STRINGS), ("evidence", _EVIDENCE),
])

PAPER_FIELDS = ("pmid", "content_hash", "title", "abstract", "year", "publication_types", "mesh_terms", "pmcid")


def _insert(store: Store, table_name: str, rows: dict[str, list], schema: pa.Schema, *, run_id: str | None,
            stamp_column: str) -> int:
    table = pa.Table.from_pydict(rows, schema=schema)
    if table.num_rows == 0:
        return 0
    with store.transaction() as conn:
        return append_arrow(conn, table_name, table, {stamp_column: utcnow(), "run_id": run_id})


def _columns(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> dict[str, list]:
    return {name: [row[name] for row in rows] for name in schema.names}


# --- papers to scan ---------------------------------------------------------------------------

def pending_papers(store: Store, scanner_version: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Current papers with no extraction yet for (pmid, content_hash, scanner_version)."""
    sql = (
        f"SELECT {', '.join('p.' + f for f in PAPER_FIELDS)} FROM current_papers p "
        "WHERE NOT EXISTS (SELECT 1 FROM extractions e WHERE e.pmid = p.pmid AND e.content_hash = p.content_hash "
        "AND e.scanner_version = ?) ORDER BY p.pmid"
    )
    params: list[Any] = [scanner_version]
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    cursor = store.conn.execute(sql, params)
    return [dict(zip(PAPER_FIELDS, row)) for row in cursor.fetchall()]


# --- full texts -------------------------------------------------------------------------------

def fulltext_pmids(store: Store, pmids: Sequence[str]) -> set[str]:
    """Papers that already have a stored full-text row (fetched once, not again every night)."""
    if not pmids:
        return set()
    rows = store.conn.execute("SELECT DISTINCT pmid FROM fulltexts WHERE pmid IN (SELECT unnest(?))",
                              [list(pmids)]).fetchall()
    return {r[0] for r in rows}


def stored_methods(store: Store, pmids: Sequence[str]) -> dict[str, str]:
    if not pmids:
        return {}
    rows = store.conn.execute(
        "SELECT pmid, methods FROM current_fulltexts WHERE methods IS NOT NULL AND pmid IN (SELECT unnest(?))",
        [list(pmids)]).fetchall()
    return {pmid: methods for pmid, methods in rows}


def insert_fulltexts(store: Store, rows: Sequence[dict[str, Any]], *, run_id: str | None) -> int:
    """Rows: pmid, pmcid, methods (or None), content_hash."""
    return _insert(store, "fulltexts", _columns(rows, FULLTEXT_SCHEMA), FULLTEXT_SCHEMA, run_id=run_id,
                   stamp_column="fetched_at")


# --- extractions ------------------------------------------------------------------------------

def insert_extractions(store: Store, rows: Sequence[dict[str, Any]], *, run_id: str | None) -> int:
    """Rows: extraction_id, pmid, content_hash, scanner_version, extractor, text_hash, sources, facts (JSON text)."""
    return _insert(store, "extractions", _columns(rows, EXTRACTION_SCHEMA), EXTRACTION_SCHEMA, run_id=run_id,
                   stamp_column="created_at")


def undecided_extractions(store: Store, policy_hash: str, *, batch_size: int = 5000
                          ) -> Iterator[list[tuple[str, str, str, str]]]:
    """Current extractions with no decision yet under ``policy_hash``: (extraction_id, pmid, version, facts).

    The rows are read in full before the first batch is yielded: the caller writes decisions on
    the same connection between batches, which would end an open cursor.
    """
    table = store.conn.sql(
        "SELECT e.extraction_id, e.pmid, e.scanner_version, e.facts::VARCHAR AS facts FROM current_extractions e "
        "WHERE NOT EXISTS (SELECT 1 FROM classifications c WHERE c.extraction_id = e.extraction_id "
        f"AND c.policy_hash = '{_quote(policy_hash)}') ORDER BY e.pmid").to_arrow_table()
    columns = [table.column(name).to_pylist() for name in ("extraction_id", "pmid", "scanner_version", "facts")]
    rows = list(zip(*columns))
    for offset in range(0, len(rows), batch_size):
        yield rows[offset:offset + batch_size]


def _quote(value: str) -> str:
    return value.replace("'", "''")


def all_current_extractions(store: Store) -> pa.Table:
    """Every current extraction's id, pmid, scanner version and facts, as one Arrow table."""
    return store.conn.sql(
        "SELECT extraction_id, pmid, scanner_version, facts::VARCHAR AS facts FROM current_extractions"
    ).to_arrow_table()


# --- classifications --------------------------------------------------------------------------

def insert_classifications(store: Store, rows: Sequence[dict[str, Any]] | dict[str, list], *,
                           run_id: str | None) -> int:
    """Rows (or ready columns): pmid, extraction_id, scanner_version, policy_version, policy_hash, criteria,
    pem, design, evidence_level, population, evidence (list of {label, quote, source})."""
    columns = rows if isinstance(rows, dict) else _columns(rows, CLASSIFICATION_SCHEMA)
    return _insert(store, "classifications", columns, CLASSIFICATION_SCHEMA, run_id=run_id,
                   stamp_column="decided_at")


def current_labels(store: Store) -> dict[str, tuple[str, tuple[str, ...]]]:
    """pmid -> (pem, criteria) of the current classifications (to count what a new policy changed)."""
    rows = store.conn.execute("SELECT pmid, pem, criteria FROM current_classifications").fetchall()
    return {pmid: (pem, tuple(criteria or ())) for pmid, pem, criteria in rows}


def record_failures(store: Store, failures: Sequence[dict[str, Any]], *, run_id: str | None) -> int:
    """Rows: pmid, stage, error, raw. One paper's failure is a row, never a crashed run."""
    if not failures:
        return 0
    now = utcnow()
    with store.transaction() as conn:
        conn.executemany(
            "INSERT INTO paper_failures (run_id, pmid, stage, error, raw, failed_at) VALUES (?, ?, ?, ?, ?, ?)",
            [[run_id, f["pmid"], f["stage"], f["error"], f.get("raw"), now] for f in failures],
        )
    return len(failures)
