"""Bulk writes of parsed records: Arrow in, one transaction per batch.

A record whose content hash equals the paper's current hash writes nothing, so
re-running a window (after a crash, or the nightly overlap) duplicates nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from atlas.models import BadRecord, Deletion, Paper
from atlas.store.db import Store
from atlas.store.runs import utcnow

_AUTHOR = pa.struct([("last", pa.string()), ("fore", pa.string()), ("initials", pa.string()),
                     ("collective", pa.string()), ("orcid", pa.string())])
_SECTION = pa.struct([("label", pa.string()), ("category", pa.string()), ("text", pa.string()),
                      ("markup", pa.string())])
_STRINGS = pa.list_(pa.string())

PAPER_SCHEMA = pa.schema([
    ("pmid", pa.string()), ("content_hash", pa.string()), ("version", pa.int32()), ("kind", pa.string()),
    ("title", pa.string()), ("title_markup", pa.string()), ("vernacular_title", pa.string()),
    ("abstract", pa.string()), ("abstract_markup", pa.string()), ("abstract_sections", pa.list_(_SECTION)),
    ("authors", pa.list_(_AUTHOR)), ("journal", pa.string()), ("journal_abbrev", pa.string()),
    ("volume", pa.string()), ("issue", pa.string()), ("pages", pa.string()), ("year", pa.int32()),
    ("pub_date", pa.string()), ("doi", pa.string()), ("pmcid", pa.string()),
    ("publication_types", _STRINGS), ("mesh_terms", _STRINGS), ("keywords", _STRINGS), ("languages", _STRINGS),
    ("status", pa.string()), ("entrez_date", pa.date32()), ("revised_date", pa.date32()),
    ("errata", _STRINGS), ("retracted_by", _STRINGS), ("retraction_of", _STRINGS), ("is_retracted", pa.bool_()),
    ("raw", pa.string()),
])


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


def _paper_columns(papers: Sequence[Paper]) -> pa.Table:
    columns: dict[str, list] = {name: [] for name in PAPER_SCHEMA.names}
    for p in papers:
        columns["pmid"].append(p.pmid)
        columns["content_hash"].append(p.content_hash)
        columns["version"].append(p.version)
        columns["kind"].append(p.kind)
        columns["title"].append(p.title)
        columns["title_markup"].append(p.title_markup)
        columns["vernacular_title"].append(p.vernacular_title)
        columns["abstract"].append(p.abstract)
        columns["abstract_markup"].append(p.abstract_markup)
        columns["abstract_sections"].append(
            [{"label": s.label, "category": s.category, "text": s.text, "markup": s.markup} for s in p.abstract_sections]
        )
        columns["authors"].append(
            [{"last": a.last, "fore": a.fore, "initials": a.initials, "collective": a.collective, "orcid": a.orcid}
             for a in p.authors]
        )
        columns["journal"].append(p.journal)
        columns["journal_abbrev"].append(p.journal_abbrev)
        columns["volume"].append(p.volume)
        columns["issue"].append(p.issue)
        columns["pages"].append(p.pages)
        columns["year"].append(p.year)
        columns["pub_date"].append(p.pub_date)
        columns["doi"].append(p.doi)
        columns["pmcid"].append(p.pmcid)
        columns["publication_types"].append(p.publication_types)
        columns["mesh_terms"].append(p.mesh_terms)
        columns["keywords"].append(p.keywords)
        columns["languages"].append(p.languages)
        columns["status"].append(p.status)
        columns["entrez_date"].append(p.entrez_date)
        columns["revised_date"].append(p.revised_date)
        columns["errata"].append(p.errata)
        columns["retracted_by"].append(p.retracted_by)
        columns["retraction_of"].append(p.retraction_of)
        columns["is_retracted"].append(p.is_retracted)
        columns["raw"].append(p.raw_xml)
    return pa.Table.from_pydict(columns, schema=PAPER_SCHEMA)


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
            table = _paper_columns(list(papers.values()))
            conn.register("incoming_papers", table)
            try:
                # Papers whose latest state is this very content (and not deleted since) are unchanged.
                conn.execute("""
                    CREATE OR REPLACE TEMP TABLE incoming_new AS
                    SELECT i.* FROM incoming_papers i
                    LEFT JOIN (
                        SELECT pmid, content_hash, seq FROM papers
                        WHERE pmid IN (SELECT pmid FROM incoming_papers)
                        QUALIFY row_number() OVER (PARTITION BY pmid ORDER BY seq DESC) = 1
                    ) latest ON latest.pmid = i.pmid
                    WHERE latest.content_hash IS DISTINCT FROM i.content_hash
                       OR EXISTS (SELECT 1 FROM deletions d WHERE d.pmid = i.pmid AND d.seq > latest.seq)
                """)
                new_pmids = [r[0] for r in conn.execute("SELECT pmid FROM incoming_new").fetchall()]
                conn.execute(
                    "INSERT INTO records (pmid, content_hash, version, source, raw, fetched_at, run_id) "
                    "SELECT pmid, content_hash, version, ?, raw, ?, ? FROM incoming_new",
                    [source, now, run_id],
                )
                conn.execute(
                    f"INSERT INTO papers ({_PAPER_COLUMNS}, fetched_at, run_id) "
                    f"SELECT {_PAPER_COLUMNS}, ?, ? FROM incoming_new",
                    [now, run_id],
                )
                conn.execute("DROP TABLE incoming_new")
            finally:
                conn.unregister("incoming_papers")
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
                [run_id, record.pmid, record.error, record.raw_xml, now],
            )
            counts.failed += 1
    return counts
