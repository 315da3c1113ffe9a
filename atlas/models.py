"""Plain data carried between the parser, the store, the scanner and the generator.

Dataclasses with slots rather than pydantic models: the parser builds tens of
thousands of these a second and validation happens at the boundaries instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any


@dataclass(slots=True)
class Author:
    last: str | None = None
    fore: str | None = None
    initials: str | None = None
    collective: str | None = None
    orcid: str | None = None

    @property
    def display(self) -> str:
        if self.collective:
            return self.collective
        parts = [p for p in (self.last, self.initials or self.fore) if p]
        return " ".join(parts)


@dataclass(slots=True)
class AbstractSection:
    label: str | None
    category: str | None
    text: str
    markup: str


@dataclass(slots=True)
class Paper:
    """One PubMed record (article or book chapter), as parsed.

    ``title``/``abstract`` are plain text for the scanner and the LLM;
    ``*_markup`` keep a small whitelist of inline tags for display.
    """

    pmid: str
    version: int = 1
    kind: str = "article"  # article | book | medline-import
    title: str = ""
    title_markup: str = ""
    vernacular_title: str | None = None
    abstract: str | None = None
    abstract_markup: str | None = None
    abstract_sections: list[AbstractSection] = field(default_factory=list)
    authors: list[Author] = field(default_factory=list)
    journal: str | None = None
    journal_abbrev: str | None = None
    volume: str | None = None
    issue: str | None = None
    pages: str | None = None
    year: int | None = None
    pub_date: str | None = None
    doi: str | None = None
    pmcid: str | None = None
    publication_types: list[str] = field(default_factory=list)
    mesh_terms: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    status: str | None = None
    entrez_date: date | None = None
    revised_date: date | None = None
    errata: list[str] = field(default_factory=list)
    retracted_by: list[str] = field(default_factory=list)
    retraction_of: list[str] = field(default_factory=list)
    is_retracted: bool = False
    raw_xml: bytes = b""  # the record exactly as received (UTF-8 XML, or MEDLINE text), hashed as is
    content_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("entrez_date", "revised_date"):
            if data[key] is not None:
                data[key] = data[key].isoformat()
        if isinstance(data["raw_xml"], bytes):
            data["raw_xml"] = data["raw_xml"].decode("utf-8", "replace")
        return data


@dataclass(slots=True)
class Deletion:
    """A DeleteCitation entry: the paper is withdrawn from PubMed, its history stays."""

    pmid: str
    version: int = 1


@dataclass(slots=True)
class BadRecord:
    """A record the parser could not read; reported, never silently dropped."""

    pmid: str | None
    error: str
    raw_xml: bytes = b""


def content_hash(raw: str | bytes) -> str:
    """sha256 of a record's raw bytes (text is hashed as UTF-8): unchanged bytes mean nothing to write."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    return hashlib.sha256(raw).hexdigest()
