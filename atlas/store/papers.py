"""Bulk writes of parsed records: Arrow in, one transaction per batch.

A record whose content hash equals the paper's current hash writes nothing, so
re-running a window (after a crash, or the nightly overlap) duplicates nothing.
Only the (pmid, content_hash) pairs are converted to Arrow for that check; the
full columns are built for the papers that changed. The raw record goes in as
bytes (a BLOB), exactly as received: no decoding, no re-encoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, chain
from operator import attrgetter

import pyarrow as pa

from atlas.models import BadRecord, Deletion, Paper
from atlas.store.db import Store, registered
from atlas.store.runs import utcnow

_AUTHOR = pa.struct([("last", pa.string()), ("fore", pa.string()), ("initials", pa.string()),
                     ("collective", pa.string()), ("orcid", pa.string())])
_AUTHOR_FIELDS = ("last", "fore", "initials", "collective", "orcid")
_STRINGS = pa.list_(pa.string())

PAPER_SCHEMA = pa.schema([
    ("pmid", pa.string()), ("content_hash", pa.string()), ("version", pa.int32()), ("kind", pa.string()),
    ("title", pa.string()), ("title_markup", pa.string()), ("vernacular_title", pa.string()),
    ("abstract", pa.string()), ("abstract_markup", pa.string()),
    ("authors", pa.list_(_AUTHOR)), ("journal", pa.string()), ("journal_abbrev", pa.string()),
    ("volume", pa.string()), ("issue", pa.string()), ("pages", pa.string()), ("year", pa.int32()),
    ("pub_date", pa.string()), ("doi", pa.string()), ("pmcid", pa.string()),
    ("publication_types", _STRINGS), ("mesh_terms", _STRINGS), ("keywords", _STRINGS), ("languages", _STRINGS),
    ("status", pa.string()), ("entrez_date", pa.date32()), ("revised_date", pa.date32()),
    ("errata", _STRINGS), ("retracted_by", _STRINGS), ("retraction_of", _STRINGS), ("is_retracted", pa.bool_()),
    ("raw", pa.binary()),
])
# The Paper attribute behind each column (the raw record is ``raw_xml``).
_COLUMN_VALUES = {name: attrgetter("raw_xml" if name == "raw" else name) for name in PAPER_SCHEMA.names}
_AUTHOR_VALUES = tuple(attrgetter(name) for name in _AUTHOR_FIELDS)


@dataclass(slots=True)
class BatchCounts:
    """What one batch did to the store."""

    received: int = 0
    inserted: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    missing: int = 0
    inserted_pmids: list[str] = field(default_factory=list)

    def add(self, other: "BatchCounts") -> None:
        self.received += other.received
        self.inserted += other.inserted
        self.unchanged += other.unchanged
        self.deleted += other.deleted
        self.failed += other.failed
        self.missing += other.missing
        self.inserted_pmids.extend(other.inserted_pmids)

    def as_dict(self) -> dict[str, int]:
        return {"received": self.received, "inserted": self.inserted, "unchanged": self.unchanged,
                "deleted": self.deleted, "failed": self.failed, "missing": self.missing}


def _list_of_structs(rows: Sequence[list], struct_type: pa.StructType, values_of: Sequence[attrgetter]) -> pa.Array:
    """A list<struct> column from per-row lists of objects: one flat child column per field, plus offsets."""
    offsets = [0, *accumulate(map(len, rows))]
    flat = list(chain.from_iterable(rows))
    children = [pa.array(list(map(value_of, flat)), type=pa.string()) for value_of in values_of]
    values = pa.StructArray.from_arrays(children, fields=list(struct_type))
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), values)


def _paper_columns(papers: Sequence[Paper]) -> pa.Table:
    """Column-wise Arrow table of a batch: one C-level pass over the papers per column, then a C conversion."""
    arrays = []
    for schema_field in PAPER_SCHEMA:
        name = schema_field.name
        values = list(map(_COLUMN_VALUES[name], papers))
        if name == "authors":
            arrays.append(_list_of_structs(values, _AUTHOR, _AUTHOR_VALUES))
        elif name == "abstract_markup":
            abstracts = map(_COLUMN_VALUES["abstract"], papers)
            arrays.append(pa.array(list(map(_markup_or_none, abstracts, values)), type=pa.string()))
        else:
            arrays.append(pa.array(values, type=schema_field.type))
    return pa.Table.from_arrays(arrays, schema=PAPER_SCHEMA)


def _markup_or_none(plain: str | None, markup: str | None) -> str | None:
    """NULL when the markup is just the escaped plain text: readers escape ``abstract`` instead.

    Markup is escaped text plus whitelisted inline tags, so markup without a
    ``<`` carries no tags; only markup with entities needs the full comparison.
    """
    if markup is None or plain is None or "<" in markup:
        return markup
    if "&" not in markup:
        return None if markup == plain else markup
    escaped = plain.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return None if markup == escaped else markup


_PAPER_COLUMNS = ", ".join(f'"{n}"' for n in PAPER_SCHEMA.names if n != "raw")


def write_batch(store: Store, items: Iterable[Paper | Deletion | BadRecord], *, run_id: str | None,
                source: str = "efetch") -> BatchCounts:
    """Store one batch of parsed records in a single transaction.

    Papers whose content hash is already the current one are skipped; a bad
    record becomes a ``paper_failures`` row; deletions are appended.
    """
    papers: dict[str, Paper] = {}
    deletions: list[Deletion] = []
    bad: list[BadRecord] = []
    counts = BatchCounts()
    for item in items:
        counts.received += 1
        if isinstance(item, Paper):
            papers[item.pmid] = item  # a PMID repeated in one batch: the last copy wins
        elif isinstance(item, Deletion):
            deletions.append(item)
        else:
            bad.append(item)
    counts.unchanged += counts.received - len(papers) - len(deletions) - len(bad)
    now = utcnow()
    with store.transaction() as conn:
        if papers:
            incoming = list(papers.values())
            keys = pa.table({"pmid": pa.array([p.pmid for p in incoming], type=pa.string()),
                             "content_hash": pa.array([p.content_hash for p in incoming], type=pa.string())})
            with registered(conn, "incoming_keys", keys):
                # Papers whose latest state is this very content (and not deleted since) are unchanged.
                changed = {row[0] for row in conn.execute("""
                    SELECT i.pmid FROM incoming_keys i
                    LEFT JOIN (
                        SELECT pmid, content_hash, seq FROM papers
                        WHERE pmid IN (SELECT pmid FROM incoming_keys)
                        QUALIFY row_number() OVER (PARTITION BY pmid ORDER BY seq DESC) = 1
                    ) latest ON latest.pmid = i.pmid
                    WHERE latest.content_hash IS DISTINCT FROM i.content_hash
                       OR EXISTS (SELECT 1 FROM deletions d WHERE d.pmid = i.pmid AND d.seq > latest.seq)
                """).fetchall()}
            to_write = [p for p in incoming if p.pmid in changed] if len(changed) < len(incoming) else incoming
            if to_write:
                with registered(conn, "incoming_papers", _paper_columns(to_write)):
                    conn.execute(
                        "INSERT INTO records (pmid, content_hash, version, source, raw, fetched_at, run_id) "
                        "SELECT pmid, content_hash, version, ?, raw, ?, ? FROM incoming_papers",
                        [source, now, run_id],
                    ).fetchall()
                    conn.execute(
                        f"INSERT INTO papers ({_PAPER_COLUMNS}, fetched_at, run_id) "
                        f"SELECT {_PAPER_COLUMNS}, ?, ? FROM incoming_papers",
                        [now, run_id],
                    ).fetchall()
            new_pmids = [p.pmid for p in to_write]
            counts.inserted += len(new_pmids)
            counts.unchanged += len(papers) - len(new_pmids)
            counts.inserted_pmids.extend(new_pmids)
        for deletion in deletions:
            already = conn.execute(
                "SELECT count(*) FROM deleted_papers WHERE pmid = ?", [deletion.pmid]
            ).fetchone()[0]
            if already:
                counts.unchanged += 1
                continue
            conn.execute(
                "INSERT INTO deletions (pmid, version, deleted_at, run_id) VALUES (?, ?, ?, ?)",
                [deletion.pmid, deletion.version, now, run_id],
            )
            counts.deleted += 1
        for record in bad:
            conn.execute(
                "INSERT INTO paper_failures (run_id, pmid, stage, error, raw, failed_at) VALUES (?, ?, 'parse', ?, ?, ?)",
                [run_id, record.pmid, record.error, _text(record.raw_xml), now],
            )
            counts.failed += 1
    return counts


def stored_pmids(store: Store) -> set[str]:
    """Every PMID the store has held a paper for, deleted ones included."""
    return {row[0] for row in store.conn.execute("SELECT DISTINCT pmid FROM papers").fetchall()}


def _text(raw: bytes | str) -> str:
    """A failed record's raw bytes for the text ``paper_failures.raw`` column (valid UTF-8 comes back unchanged)."""
    return raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw
