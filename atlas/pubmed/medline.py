"""Import the MEDLINE ("PubMed format") text a user saves from the PubMed website.

The export (``.txt`` or ``.nbib``) is a series of records separated by blank
lines; each line is a tag padded to four characters, ``"- "`` and a value, with
continuation lines indented by six spaces. ``Bio.Medline.parse`` reads the
fields of each record; the record's own text is kept, UTF-8 encoded, as
``raw_xml`` (the field name is shared with the XML path) and hashed into
``content_hash``.

Differences from the XML path, all forced by what the format carries:

* No inline markup: ``title_markup``/``abstract_markup`` are the escaped text.
* A structured abstract is one ``AB`` paragraph with ``LABEL:`` prefixes; it is
  split back into sections on all-capital labels (as NLM writes them), so
  ``abstract`` has the same ``"LABEL: text"`` lines as the XML path. There is
  no NLM category.
* ``journal_abbrev`` is ``TA`` (the MEDLINE abbreviation, e.g. ``J Clin Oncol``),
  not the ISO abbreviation the XML prefers.
* ``entrez_date`` is ``CRDT`` (the ``[entrez]`` history date), else ``EDAT``.
* MeSH headings ``*Burns/epidemiology`` become the bare descriptor ``Burns``.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from datetime import date
from typing import Union

from Bio import Medline

from atlas.errors import InputError
from atlas.models import AbstractSection, Author, BadRecord, Paper, content_hash
from atlas.pubmed.parse import normalise_orcid

MedlineSource = Union[str, bytes, "os.PathLike[str]"]

_TAG_LINE = re.compile(r"^([A-Z][A-Z0-9]{0,3}) {0,3}- ")
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_DOI = re.compile(r"(\S+)\s+\[doi\]")
_PMID_REF = re.compile(r"PMID:\s*(\d+)")
_SECTION_LABEL = re.compile(r"(?:^|(?<=[.?!)\]] ))([A-Z][A-Z0-9 ,/&()'-]*[A-Z)?]): (?=\S)")
_HISTORY_DATE = re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})")


def iter_medline(source: MedlineSource) -> Iterator[Paper | BadRecord]:
    """Yield one ``Paper`` (kind ``medline-import``) or ``BadRecord`` per record.

    ``source`` is a path, or the export's text itself (``str`` holding a
    ``PMID-`` line, or ``bytes``). Raises ``InputError`` when the input is
    not PubMed-format text at all (e.g. a CSV or XML export).
    """
    for index, chunk in enumerate(_record_chunks(_read_text(source))):
        if index == 0 and not _fields(chunk):
            raise InputError(
                "not PubMed-format (MEDLINE) text: the first block has no 'TAG - value' lines such as 'PMID- 12345'"
            )
        yield _paper_from_chunk(chunk)


def parse_medline(source: MedlineSource) -> list[Paper | BadRecord]:
    """All records at once."""
    return list(iter_medline(source))


def _read_text(source: MedlineSource) -> str:
    if isinstance(source, bytes):
        text = source.decode("utf-8-sig")
    elif isinstance(source, str) and ("\n" in source or source.lstrip().startswith("PMID")):
        text = source
    elif isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
            text = handle.read().decode("utf-8-sig")
    else:
        raise TypeError(f"cannot read MEDLINE text from {type(source).__name__}: pass a path, str or bytes")
    return text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")


def _record_chunks(text: str) -> Iterator[str]:
    """Records are runs of lines ended by an empty line.

    A line of six or more spaces is a blank continuation line (a paragraph
    break inside a field), not the end of a record.
    """
    lines: list[str] = []
    for line in text.split("\n"):
        if line.strip():
            lines.append(line.rstrip())
        elif line.startswith("      ") and lines:
            lines.append("      ")
        elif lines:
            yield "\n".join(lines) + "\n"
            lines = []
    if lines:
        yield "\n".join(lines) + "\n"


def _fields(chunk: str) -> list[tuple[str, str]]:
    """(tag, value) in record order, continuation lines joined with a space."""
    fields: list[tuple[str, str]] = []
    for line in chunk.split("\n"):
        if not line.strip():
            continue
        if line.startswith("      ") and fields:
            tag, value = fields[-1]
            fields[-1] = (tag, f"{value} {line.strip()}")
            continue
        match = _TAG_LINE.match(line)
        if match:
            fields.append((match.group(1), line[match.end() :].strip()))
        elif fields:  # a wrapped line without the usual indent
            tag, value = fields[-1]
            fields[-1] = (tag, f"{value} {line.strip()}")
    return fields


def _paper_from_chunk(chunk: str) -> Paper | BadRecord:
    pmid: str | None = None
    try:
        records = list(Medline.parse(io.StringIO(chunk)))
        if len(records) != 1:
            raise ValueError(f"expected one MEDLINE record in the block, found {len(records)}")
        record = records[0]
        pmid = _text(record, "PMID")
        if not pmid:
            return BadRecord(pmid=None, error="MEDLINE record has no PMID line", raw_xml=chunk.encode("utf-8"))
        if not pmid.isdigit():
            return BadRecord(pmid=pmid, error=f"PMID {pmid!r} is not a number", raw_xml=chunk.encode("utf-8"))
        return _build(record, _fields(chunk), pmid, chunk)
    except Exception as exc:  # one unreadable record must not stop the import
        return BadRecord(pmid=pmid, error=f"{type(exc).__name__}: {exc}", raw_xml=chunk.encode("utf-8"))


def _build(record: Medline.Record, fields: list[tuple[str, str]], pmid: str, chunk: str) -> Paper:
    title = _clean(_text(record, "TI")) or ""
    abstract = _clean(_text(record, "AB"))
    sections = _split_sections(abstract) if abstract else []
    dp = _clean(_text(record, "DP"))
    year_match = _YEAR.search(dp or "") or _YEAR.search(_text(record, "DEP") or "")
    publication_types = [_clean(v) for v in _values(fields, "PT")]
    retracted_by = _references(fields, "RIN")
    raw = chunk.encode("utf-8")
    paper = Paper(
        pmid=pmid,
        version=1,
        kind="medline-import",
        title=title,
        title_markup=_escape(title),
        vernacular_title=_clean(_text(record, "TT")),
        abstract="\n".join(f"{s.label}: {s.text}" if s.label else s.text for s in sections) or None,
        abstract_markup="\n".join(f"{_escape(s.label)}: {s.markup}" if s.label else s.markup for s in sections)
        or None,
        abstract_sections=sections,
        authors=_authors(fields),
        journal=_clean(_text(record, "JT")),
        journal_abbrev=_clean(_text(record, "TA")),
        volume=_clean(_text(record, "VI")),
        issue=_clean(_text(record, "IP")),
        pages=_clean(_text(record, "PG")),
        year=int(year_match.group(1)) if year_match else None,
        pub_date=dp,
        doi=_doi(record, fields),
        pmcid=_clean(_text(record, "PMC")),
        publication_types=publication_types,
        mesh_terms=[_descriptor(v) for v in _values(fields, "MH")],
        keywords=[_clean(v) for v in _values(fields, "OT")],
        languages=[_clean(v) for v in _values(fields, "LA")],
        status=_clean(_text(record, "STAT")),
        entrez_date=_entrez_date(record, fields),
        revised_date=_compact_date(_text(record, "LR")),
        errata=_references(fields, "EIN"),
        retracted_by=retracted_by,
        retraction_of=_references(fields, "ROF"),
        is_retracted=bool(retracted_by) or "Retracted Publication" in publication_types,
        raw_xml=raw,
        content_hash=content_hash(raw),
    )
    return paper


# --------------------------------------------------------------------------- fields


def _text(record: Medline.Record, key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, list):
        value = " ".join(value)
    return value.strip() or None


def _values(fields: list[tuple[str, str]], tag: str) -> list[str]:
    return [value for key, value in fields if key == tag and value]


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    return " ".join(value.split()) or None


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _split_sections(abstract: str) -> list[AbstractSection]:
    """Split ``BACKGROUND: ... METHODS: ...`` on all-capital labels; else one section."""
    matches = list(_SECTION_LABEL.finditer(abstract))
    if not matches or matches[0].start() != 0:
        return [AbstractSection(label=None, category=None, text=abstract, markup=_escape(abstract))]
    sections = []
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(abstract)
        text = abstract[match.end() : end].strip()
        sections.append(AbstractSection(label=match.group(1), category=None, text=text, markup=_escape(text)))
    return sections


def _authors(fields: list[tuple[str, str]]) -> list[Author]:
    """Authors in record order: FAU/AU pairs, CN collectives and AUID ORCIDs interleave."""
    authors: list[Author] = []
    current: Author | None = None
    for tag, value in fields:
        if tag == "FAU":
            last, _, fore = value.partition(",")
            current = Author(last=_clean(last), fore=_clean(fore))
            authors.append(current)
        elif tag == "AU":
            if current is not None and current.initials is None and current.last and value.startswith(current.last):
                current.initials = _clean(value[len(current.last) :])
            elif current is None or current.initials is not None or not current.last:
                # an AU line without its FAU (older records): "Smith JA"
                last, _, initials = value.rpartition(" ")
                current = Author(last=_clean(last) or _clean(initials), initials=_clean(initials) if last else None)
                authors.append(current)
        elif tag == "CN":
            current = Author(collective=_clean(value))
            authors.append(current)
        elif tag == "AUID" and current is not None and value.upper().startswith("ORCID"):
            current.orcid = normalise_orcid(value.split(":", 1)[-1])
    for author in authors:
        if author.initials is None and author.fore:
            author.initials = "".join(part[0] for part in author.fore.replace("-", " ").split() if part)
    return authors


def _descriptor(heading: str) -> str:
    """``*Frailty/complications`` → ``Frailty``."""
    return " ".join(heading.split("/", 1)[0].replace("*", "").split())


def _doi(record: Medline.Record, fields: list[tuple[str, str]]) -> str | None:
    for value in [_text(record, "LID") or ""] + _values(fields, "AID"):
        match = _DOI.search(value)
        if match:
            return match.group(1)
    return None


def _references(fields: list[tuple[str, str]], tag: str) -> list[str]:
    """``EIN - BMJ. 2022;377:o1045. PMID: 35470203`` → the PMID, else the reference text."""
    refs: list[str] = []
    for value in _values(fields, tag):
        match = _PMID_REF.search(value)
        ref = match.group(1) if match else _clean(value)
        if ref and ref not in refs:
            refs.append(ref)
    return refs


def _entrez_date(record: Medline.Record, fields: list[tuple[str, str]]) -> date | None:
    for value in _values(fields, "CRDT") + [_text(record, "EDAT") or ""]:
        parsed = _history_date(value)
        if parsed:
            return parsed
    for value in _values(fields, "PHST"):
        if value.endswith("[entrez]"):
            return _history_date(value)
    return None


def _history_date(value: str) -> date | None:
    match = _HISTORY_DATE.match(value.strip())
    if not match:
        return None
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return None


def _compact_date(value: str | None) -> date | None:
    """``20230412`` → 2023-04-12."""
    if not value or len(value.strip()) != 8 or not value.strip().isdigit():
        return None
    value = value.strip()
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None
