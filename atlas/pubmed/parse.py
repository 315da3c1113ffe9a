"""Streaming parser for PubMed XML (efetch output, baseline and update files).

Pure functions over lxml with a safe parser: no DTD loading, no entity
expansion, no network. The input is read in chunks; each record's bytes are
cut out at its start and end tags and parsed as a small document of its own
(see ``_iter_segments``), with blank text nodes dropped unless that could
change a field (``SegmentReader``); anything unusual falls back to a streamed
``iterparse`` of the rest, and each record is read with plain child loops (no
XPath in the hot path), so memory stays flat on files of any size. Large
files can be read by worker processes (``atlas.pubmed.parallel``).

Choices worth knowing:

* ``raw_xml`` is the record's bytes exactly as they came (UTF-8), and
  ``content_hash`` is their sha256; only documents in another encoding, with
  namespaces on the root, or in an unusual shape get a re-serialised record.

* ``mesh_terms`` holds descriptor names only, one per ``MeshHeading`` in
  record order; qualifiers (subheadings) are not flattened into it so that a
  descriptor can be matched exactly. They stay available in ``raw_xml``.
* ``abstract`` joins the ``AbstractText`` sections as ``"LABEL: text"``
  paragraphs separated by ``"\\n"`` (unlabelled sections are just their text);
  ``abstract_markup`` has the same shape with whitelisted inline tags, so that
  stripping its tags and unescaping it gives ``abstract`` back.
* Plain text flattens ``<i> <b> <u> <sup> <sub>`` to their text and MathML to
  linear text (``x^2``, ``V̇O_2max``, ``a/b``, ``^3He``); whitespace runs
  collapse to one space; non-ASCII is kept.
* ORCID identifiers are stored bare (``0000-0002-4590-7461``), whatever URL
  form the record used.
* For book chapters (``PubmedBookArticle``) ``journal`` is the book title,
  authors come from the ``AuthorList Type="authors"`` (never the editors) and
  the year is the chapter's ``ContributionDate``, else the book's ``PubDate``.
* Author entries marked ``ValidYN="N"`` (names NLM flagged as wrong) are skipped.
"""

from __future__ import annotations

import gzip
import html
import io
import os
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import IO, Union

from lxml import etree

from atlas.errors import ParseError
from atlas.models import AbstractSection, Author, BadRecord, Deletion, Paper, content_hash

Record = Union[Paper, Deletion, BadRecord]
Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]

MATHML_NS = "http://www.w3.org/1998/Math/MathML"

# Elements iterparse reports; everything else is read from the finished record subtree.
_SET_ROOTS = frozenset({"PubmedArticleSet", "MedlineCitationSet"})
_RECORD_TAGS = frozenset({"PubmedArticle", "PubmedBookArticle", "MedlineCitation", "DeleteCitation"})
_ALLOWED_ROOTS = _SET_ROOTS | {"PubmedArticle", "PubmedBookArticle", "MedlineCitation"}
_WATCHED = tuple(sorted(_SET_ROOTS | _RECORD_TAGS))

INLINE_TAGS = frozenset({"i", "b", "u", "sup", "sub"})
_OPEN_TAG = {t: f"<{t}>" for t in INLINE_TAGS}
_CLOSE_TAG = {t: f"</{t}>" for t in INLINE_TAGS}

_WS = re.compile(r"\s+")
_ASCII_SPACES = ("\n", "\t", "\r", "\f", "\v", "\x1c", "\x1d", "\x1e", "\x1f")  # str.isspace() below 128, but " "
_SHORT_TEXT = 64
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_ORCID = re.compile(r"(\d{4}-\d{4}-\d{4}-\d{3}[\dX])", re.IGNORECASE)
_PMCID = re.compile(r"\bPMC\d+\b")
_GZIP_MAGIC = b"\x1f\x8b"

_MONTHS = {
    m: i
    for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)
}


def _xml_parser_kwargs() -> dict:
    """The one set of safe parser options used for every PubMed/PMC document."""
    return {
        "resolve_entities": False,
        "no_network": True,
        "load_dtd": False,
        "huge_tree": False,
        "collect_ids": False,
    }


def safe_xml_parser() -> etree.XMLParser:
    """A fresh non-streaming parser with the same safe settings (for small documents)."""
    return etree.XMLParser(**_xml_parser_kwargs())


# --------------------------------------------------------------------------- sources


@contextmanager
def _open_source(source: Source) -> Iterator[IO[bytes]]:
    """Yield a binary stream for a path, bytes or binary file, gunzipping when needed."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if data[:2] == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as gz:
                yield gz
        else:
            yield io.BytesIO(data)
        return
    if isinstance(source, str) and source.lstrip()[:1] == "<":
        yield io.BytesIO(source.encode("utf-8"))
        return
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        with open(path, "rb") as raw:
            if raw.read(2) == _GZIP_MAGIC:  # the content decides, not the file name
                raw.seek(0)
                with gzip.GzipFile(fileobj=raw) as gz:
                    yield gz
            else:
                raw.seek(0)
                yield raw
        return
    if hasattr(source, "read"):
        stream = source if hasattr(source, "peek") else io.BufferedReader(_RawAdapter(source))
        if stream.peek(2)[:2] == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=stream) as gz:
                yield gz
        else:
            yield stream
        return
    raise TypeError(f"cannot read PubMed XML from {type(source).__name__}: pass a path, bytes or a binary file")


class _RawAdapter(io.RawIOBase):
    """Lets a bare ``read()``-only object sit under ``io.BufferedReader`` (for ``peek``)."""

    def __init__(self, inner: IO[bytes]):
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._inner.read(len(buffer))
        if isinstance(data, str):
            raise TypeError("PubMed XML streams must be binary (open the file with 'rb')")
        n = len(data)
        buffer[:n] = data
        return n


# --------------------------------------------------------------------------- public API


def iter_records(source: Source, *, workers: int = 1) -> Iterator[Record]:
    """Yield a ``Paper``, ``Deletion`` or ``BadRecord`` for each record, streaming.

    Records are yielded as they complete; a document that turns out to be
    truncated or malformed raises ``ParseError`` after the records before the
    damage. Use ``parse_records`` when a batch must be all-or-nothing.
    ``workers`` > 1 reads the records in that many processes, this one and
    ``workers - 1`` helpers (see ``atlas.pubmed.parallel``): the same records
    in the same order, for large files; small documents are not worth the
    helpers' start.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    with _open_source(source) as stream:
        if workers == 1:
            yield from _iter_stream(_iter_segments(stream))
        else:
            from atlas.pubmed.parallel import iter_segments_parallel  # it imports this module

            yield from _iter_stream(iter_segments_parallel(stream, workers))


def parse_records(data: bytes | str) -> list[Record]:
    """Parse a whole document at once; raises ``ParseError`` before returning anything."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    return list(iter_records(data))


def parse_record(raw_xml: str | bytes) -> Paper | BadRecord:
    """Re-read one record's ``raw_xml`` (as stored) into a ``Paper``."""
    records = [r for r in parse_records(raw_xml) if not isinstance(r, Deletion)]
    if len(records) != 1:
        raise ParseError(f"expected exactly one PubMed record, found {len(records)}")
    return records[0]


# --------------------------------------------------------------------------- streaming

# Reads stay below glibc's mmap threshold (128 kB): larger buffers are mapped fresh and page-faulted in on every
# read, which cost more here than the parsing of the record bytes they carry.
_CHUNK_SIZE = 64 << 10
_PROLOG_LIMIT = 1 << 20
_XML_SPACE = b" \t\r\n"
_ATTRIBUTES = rb"(?:[ \t\r\n]+[A-Za-z_:][\w:.-]*[ \t\r\n]*=[ \t\r\n]*(?:\"[^\"<]*\"|'[^'<]*'))*[ \t\r\n]*"
# A UTF-8 document in the plain PubMed shape: declaration, comments, an external DOCTYPE, then the root.
_PROLOG = re.compile(
    rb"(?:\xef\xbb\xbf)?(?:<\?xml(?P<declaration>[^?<>]*)\?>)?"
    rb"(?:[ \t\r\n]+|<!--(?:[^-]|-(?!-))*-->|<!DOCTYPE[^\[\]<>]*>)*"
    rb"<(?P<root>PubmedArticleSet|MedlineCitationSet|PubmedArticle|PubmedBookArticle|MedlineCitation)"
    rb"(?P<attributes>" + _ATTRIBUTES + rb")>"
)
_ENCODING = re.compile(rb"encoding[ \t\r\n]*=[ \t\r\n]*[\"']([A-Za-z0-9._-]+)[\"']")
_RECORD_END = {name: b"</" + name + b">" for name in (b"PubmedArticle", b"PubmedBookArticle", b"MedlineCitation",
                                                       b"DeleteCitation")}
_RECORD_OPENINGS = tuple((name, b"<" + name) for name in _RECORD_END)
_NAME_ENDS = frozenset((b">", b" ", b"\t", b"\r", b"\n"))
_LOOKAHEAD = 32  # enough bytes to tell a record's start tag or the root's end tag
_RECORD_LIMIT = 16 << 20  # far above any PubMed record; past it the tree reader streams the rest


def _iter_stream(records: Iterator[Record]) -> Iterator[Record]:
    """Report libxml2 and gzip failures as ``ParseError``, after the records before the damage."""
    try:
        yield from records
    except etree.XMLSyntaxError as exc:
        raise ParseError(f"PubMed XML is malformed or truncated: {exc}") from exc
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ParseError(f"gzip-compressed PubMed XML is truncated or corrupt: {exc}") from exc


def _plain_utf8(prolog: re.Match) -> bool:
    """Slices of the input are the records' own UTF-8 bytes only if the document is UTF-8 without namespaces."""
    if b"xmlns" in prolog.group("attributes"):
        return False
    declaration = prolog.group("declaration")
    encoding = _ENCODING.search(declaration) if declaration else None
    return encoding is None or encoding.group(1).lower() in (b"utf-8", b"us-ascii", b"ascii")


def _iter_segments(stream: IO[bytes]) -> Iterator[Record]:
    """Parse each record cut out by ``_Slicer`` as a small document of its own.

    The slice is parsed alone, which checks it and is faster than growing one
    streamed tree, and it is the record's ``raw_xml``, verbatim. A slice that
    is not well-formed alone (cut at an end tag inside a comment or CDATA, or
    using an entity the DOCTYPE would have allowed) hands the rest of the
    document, from that record on, to ``_iter_tree``.
    """
    slicer = _Slicer(stream)
    reader = SegmentReader()
    for item in slicer:
        if not isinstance(item, tuple):
            yield from _iter_tree(item)
            return
        tag, segment = item
        records = reader.read(tag, segment)
        if records is None:
            yield from _iter_tree(slicer.rest_from([segment]))
            return
        yield from records


class _LeanParser(etree.XMLParser):
    """The parser that drops blank text nodes; readers ask for it by type (``_parsed_lean``)."""


class _BlanksDropped(Exception):
    """A reader met content that a parse dropping blank text nodes may have changed."""


def _parsed_lean(elem: etree._Element) -> bool:
    return type(elem.getroottree().parser) is _LeanParser


class SegmentReader:
    """Reads records cut out alone, with two parsers: one drops blank text nodes, one keeps them.

    Most of a record's nodes are the indentation between its elements, so the
    parse that drops them builds and walks a smaller tree (4-15% less time per
    record in interleaved runs here, 3% fewer instructions). libxml2
    drops a whitespace-only text node only before the first text of its
    element and only where a child node comes next or came before, and keeps
    one that is an element's whole content. Leaf text, all the readers take
    from most elements, is therefore the same in both trees; mixed content
    (a title, an abstract section) can differ only in an element with child
    nodes and no leading text, such as a title that begins with ``<i>``, and
    for the title itself only where a child but the last has no tail (its
    first and last blanks are stripped anyway). The readers raise
    ``_BlanksDropped`` when they meet that in a lean tree, and the record is
    parsed again with blanks kept (1 of the 70 modern fixture records).
    """

    def __init__(self) -> None:
        self._lean = _LeanParser(remove_blank_text=True, **_xml_parser_kwargs())
        self._full = etree.XMLParser(**_xml_parser_kwargs())

    def read(self, tag: bytes, segment: bytes) -> list[Record] | None:
        """The records in one slice, or None when the slice is not a well-formed element on its own."""
        try:
            self._lean.feed(segment)
            elem = self._lean.close()
        except etree.XMLSyntaxError:
            return None
        if tag == b"DeleteCitation":
            return list(_deletions(elem))
        reader = _article_paper if tag == b"PubmedArticle" else _book_paper if tag == b"PubmedBookArticle" \
            else _legacy_citation_paper
        try:
            return [_read_record(elem, reader, segment)]
        except _BlanksDropped:
            self._full.feed(segment)
            return [_read_record(self._full.close(), reader, segment)]


class _Slicer:
    """Cut the input at record boundaries: yields ``(tag, bytes)`` per record, or a stream for ``_iter_tree``.

    Records sit side by side under the root and never nest, so a byte scan for
    ``<PubmedArticle`` and the next ``</PubmedArticle>`` finds each one.
    Whenever that shortcut could read differently from the whole document it
    is not taken: anything but whitespace between records, or a document that
    is not plain UTF-8 PubMed XML, ends the iteration with a stream of the
    rest of the document (from where slicing stopped) for the tree reader,
    which reports problems as before. ``rest_from`` gives the same kind of
    stream for a consumer that finds a slice it cannot read alone.
    """

    def __init__(self, stream: IO[bytes]):
        self._stream = stream
        self._head = b""  # replayed in front of the rest when the tree reader takes over
        self._data = b""
        self._pos = 0
        self.offset = 0  # where the last record yielded starts, in bytes read from the stream

    def rest_from(self, segments: list[bytes]) -> IO[bytes]:
        """The document from the first of ``segments`` (already yielded, in order) to its end."""
        return _Replay(self._head + b"\n".join(segments) + self._data[self._pos :], self._stream)

    def __iter__(self) -> Iterator[tuple[bytes, bytes] | IO[bytes]]:
        stream = self._stream
        data = b""
        eof = False
        prolog = None
        while prolog is None and not eof and len(data) < _PROLOG_LIMIT:
            chunk = stream.read(_CHUNK_SIZE)
            eof = not chunk
            data += chunk
            prolog = _PROLOG.match(data)
        if prolog is None or not _plain_utf8(prolog):
            yield _Replay(data, stream)
            return
        root_start = prolog.start("root") - 1
        root = prolog.group("root")
        if root in _RECORD_END:  # one bare record is the document (a stored raw_xml read back)
            while not eof:
                chunk = stream.read(_CHUNK_SIZE)
                eof = not chunk
                data += chunk
            close = _RECORD_END[root]
            end = data.find(close, root_start)
            if end >= 0 and not data[end + len(close) :].strip(_XML_SPACE):
                self._head, self._data, self._pos = data[:root_start], data, end + len(close)
                self.offset = root_start
                yield root, data[root_start : end + len(close)]
            else:
                yield io.BytesIO(data)
            return

        self._head = data[: prolog.end()]
        root_end = b"</" + root + b">"
        data = data[prolog.end() :]
        base = prolog.end()  # stream offset of data[0]
        pos = 0
        while True:
            self._data, self._pos = data, pos
            start = data.find(b"<", pos)
            gap = data[pos:] if start < 0 else data[pos:start]
            if gap.strip(_XML_SPACE):  # text between records
                yield self.rest_from([])
                return
            if (start < 0 or len(data) - start < _LOOKAHEAD) and not eof:
                chunk = stream.read(_CHUNK_SIZE)
                eof = not chunk
                data = data[pos:] + chunk
                base += pos
                pos = 0
                continue
            if start < 0:  # the input ends inside the root
                yield self.rest_from([])
                return
            tag = _record_tag(data, start)
            if tag is None:
                rest = data[start:]
                if rest.startswith(root_end):  # only whitespace may follow the root's end tag
                    tail = rest[len(root_end) :]
                    while not tail.strip(_XML_SPACE):
                        if eof:
                            return
                        tail = stream.read(_CHUNK_SIZE)
                        eof = not tail
                    rest = root_end + tail
                self._data, self._pos = rest, 0
                yield self.rest_from([])
                return
            close = _RECORD_END[tag]
            end = data.find(close, start)
            while end < 0 and not eof and len(data) - start <= _RECORD_LIMIT:
                chunk = stream.read(max(_CHUNK_SIZE, len(data) - start))  # doubling: a long record is read in O(n)
                eof = not chunk
                searched = max(0, len(data) - len(close) + 1 - start)
                data = data[start:] + chunk
                base += start
                start = 0
                end = data.find(close, searched)
            if end < 0:  # the input stops inside a record, or no end tag within any sane record size
                self._data, self._pos = data, start
                yield self.rest_from([])
                return
            pos = end + len(close)
            self._data, self._pos = data, pos
            self.offset = base + start
            yield tag, data[start:pos]


def _record_tag(data: bytes, at: int) -> bytes | None:
    """The record element whose start tag begins at ``at``, if any (plain byte tests: this runs per record)."""
    for tag, opening in _RECORD_OPENINGS:
        if data.startswith(opening, at) and data[at + len(opening) : at + len(opening) + 1] in _NAME_ENDS:
            return tag
    return None


class _Replay:
    """Bytes already read, then the rest of the stream: lets the tree reader start where slicing stopped."""

    def __init__(self, head: bytes, rest: IO[bytes]):
        self._head = head
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        if self._head:
            if size is None or size < 0:
                data, self._head = self._head + self._rest.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._rest.read(size)


def _iter_tree(stream: IO[bytes]) -> Iterator[Record]:
    """Read the document as one streamed tree (any shape iterparse accepts); records are re-serialised."""
    context = etree.iterparse(stream, events=("start", "end"), tag=_WATCHED, **_xml_parser_kwargs())
    root_seen = False
    for event, elem in context:
        if event == "start":
            if not root_seen:
                _check_root(elem)
                root_seen = True
            continue
        tag = elem.tag
        if tag in _SET_ROOTS:
            continue
        parent = elem.getparent()
        if tag == "MedlineCitation" and parent is not None and parent.tag == "PubmedArticle":
            continue  # the citation part of a PubmedArticle, read with its record
        if tag == "DeleteCitation":
            yield from _deletions(elem)
        else:
            raw = etree.tostring(elem, encoding="UTF-8", xml_declaration=False, with_tail=False)
            if tag == "PubmedArticle":
                yield _read_record(elem, _article_paper, raw)
            elif tag == "PubmedBookArticle":
                yield _read_record(elem, _book_paper, raw)
            else:
                yield _read_record(elem, _legacy_citation_paper, raw)
        _release(elem, parent)
    if not root_seen:
        root = getattr(context, "root", None)
        if root is None:
            raise ParseError("PubMed XML document has no root element")
        raise ParseError(_unexpected_root_message(root))


def _check_root(elem: etree._Element) -> None:
    """The first watched element must be the document root and an expected one."""
    if elem.getparent() is None and elem.tag in _ALLOWED_ROOTS:
        return
    root = elem.getroottree().getroot()
    raise ParseError(_unexpected_root_message(root))


def _unexpected_root_message(root: etree._Element) -> str:
    tag = root.tag if isinstance(root.tag, str) else "?"
    message = f"unexpected root element <{tag}> (expected PubmedArticleSet or MedlineCitationSet)"
    error = root.find(".//ERROR") if tag != "ERROR" else root
    if error is not None and (error.text or "").strip():
        message += f"; the service reported ERROR: {_WS.sub(' ', error.text).strip()[:300]}"
    return message


def _release(elem: etree._Element, parent: etree._Element | None) -> None:
    """Free a finished record and the already-finished siblings before it."""
    elem.clear(keep_tail=False)
    if parent is not None:
        while elem.getprevious() is not None:
            del parent[0]


def _deletions(elem: etree._Element) -> Iterator[Deletion]:
    for child in elem:
        if child.tag == "PMID":
            pmid = (child.text or "").strip()
            if pmid:
                yield Deletion(pmid=pmid, version=_version(child))


def _read_record(elem: etree._Element, reader, raw: bytes) -> Paper | BadRecord:
    """Run one record reader; any failure becomes a BadRecord carrying the raw XML."""
    pmid: str | None = None
    try:
        paper = reader(elem)
        pmid = paper.pmid
        if not pmid:
            return BadRecord(pmid=None, error="record has no PMID", raw_xml=raw)
        if not pmid.isdigit():
            return BadRecord(pmid=pmid, error=f"PMID {pmid!r} is not a number", raw_xml=raw)
        paper.raw_xml = raw
        paper.content_hash = content_hash(raw)
        return paper
    except _BlanksDropped:
        raise  # not a bad record: the caller parses it again with blanks kept
    except Exception as exc:  # one unreadable record must not stop the batch
        if pmid is None:
            pmid = _find_pmid(elem)
        return BadRecord(pmid=pmid, error=f"{type(exc).__name__}: {exc}", raw_xml=raw)


def _find_pmid(elem: etree._Element) -> str | None:
    for path in ("MedlineCitation/PMID", "BookDocument/PMID", "PMID"):
        found = elem.find(path)
        if found is not None and (found.text or "").strip():
            return found.text.strip()
    return None


# --------------------------------------------------------------------------- records


def _article_paper(elem: etree._Element) -> Paper:
    paper = Paper(pmid="", kind="article")
    citation = None
    pubmed_data = None
    for child in elem:
        tag = child.tag
        if tag == "MedlineCitation":
            citation = child
        elif tag == "PubmedData":
            pubmed_data = child
    if citation is None:
        raise ValueError("PubmedArticle has no MedlineCitation")
    _fill_citation(paper, citation)
    if pubmed_data is not None:
        _fill_pubmed_data(paper, pubmed_data)
    _finish(paper)
    return paper


def _legacy_citation_paper(elem: etree._Element) -> Paper:
    """A bare MedlineCitation (pre-2017 MEDLINE files): no PubmedData block."""
    paper = Paper(pmid="", kind="article")
    _fill_citation(paper, elem)
    _finish(paper)
    return paper


def _fill_citation(paper: Paper, citation: etree._Element) -> None:
    paper.status = citation.get("Status")
    medline_ta = None
    other_pmcid = None
    for child in citation:
        tag = child.tag
        if tag == "PMID":
            paper.pmid = (child.text or "").strip()
            paper.version = _version(child)
        elif tag == "Article":
            _fill_article(paper, child)
        elif tag == "MedlineJournalInfo":
            for sub in child:
                if sub.tag == "MedlineTA":
                    medline_ta = _leaf(sub)
        elif tag == "MeshHeadingList":
            _add_mesh_terms(paper, child)
        elif tag == "KeywordList":
            _add_keywords(paper, child)
        elif tag == "CommentsCorrectionsList":
            _fill_comments_corrections(paper, child)
        elif tag == "DateRevised":
            paper.revised_date = _date_of(child)
        elif tag == "OtherID" and other_pmcid is None:
            match = _PMCID.search(child.text or "")
            if match:
                other_pmcid = match.group(0)
    if paper.journal_abbrev is None:
        paper.journal_abbrev = medline_ta
    if paper.pmcid is None:
        paper.pmcid = other_pmcid


def _add_mesh_terms(paper: Paper, heading_list: etree._Element) -> None:
    mesh_terms = paper.mesh_terms
    for descriptor in heading_list.iter("DescriptorName"):
        text = descriptor.text  # a leaf element in every PubMed DTD
        if text:
            name = collapse_ws(text)
            if name:
                mesh_terms.append(name)


def _fill_article(paper: Paper, article: etree._Element) -> None:
    eloc_doi = None
    article_date = None
    for child in article:
        tag = child.tag
        if tag == "Journal":
            _fill_journal(paper, child)
        elif tag == "ArticleTitle":
            paper.title, paper.title_markup = render_inline(child)
        elif tag == "VernacularTitle":
            paper.vernacular_title = render_inline(child)[0] or None
        elif tag == "Pagination":
            paper.pages = _pages(child)
        elif tag == "ELocationID":
            if child.get("EIdType") == "doi" and child.get("ValidYN") != "N" and eloc_doi is None:
                eloc_doi = _plain_simple(child) or None
        elif tag == "Abstract":
            _fill_abstract(paper, child)
        elif tag == "AuthorList":
            if child.get("Type") in (None, "authors"):
                paper.authors.extend(_authors(child))
        elif tag == "Language":
            language = _leaf(child)
            if language:
                paper.languages.append(language)
        elif tag == "PublicationTypeList":
            for sub in child:
                if sub.tag == "PublicationType":
                    paper.publication_types.append(_leaf(sub) or "")
        elif tag == "ArticleDate" and article_date is None:
            article_date = child
    if paper.doi is None:
        paper.doi = eloc_doi
    if paper.year is None and article_date is not None:
        # no usable journal issue date (rare, ahead-of-print records): the electronic date stands in
        paper.year, electronic = _pub_date(article_date)
        paper.pub_date = paper.pub_date or electronic


def _fill_journal(paper: Paper, journal: etree._Element) -> None:
    for child in journal:
        tag = child.tag
        if tag == "Title":
            paper.journal = _leaf(child)
        elif tag == "ISOAbbreviation":
            paper.journal_abbrev = _leaf(child)
        elif tag == "JournalIssue":
            for sub in child:
                stag = sub.tag
                if stag == "Volume":
                    paper.volume = _leaf(sub)
                elif stag == "Issue":
                    paper.issue = _leaf(sub)
                elif stag == "PubDate":
                    paper.year, paper.pub_date = _pub_date(sub)


def _fill_pubmed_data(paper: Paper, data: etree._Element) -> None:
    """PubmedData / PubmedBookData: history dates and the record's own article ids."""
    entrez: list[etree._Element] = []
    pubmed: list[etree._Element] = []
    for child in data:
        tag = child.tag
        if tag == "History":
            for event in child:
                status = event.get("PubStatus")
                if status == "entrez":
                    entrez.append(event)
                elif status == "pubmed":
                    pubmed.append(event)
        elif tag == "ArticleIdList":
            _fill_article_ids(paper, child)
    # the first readable entrez date, else the first readable pubmed date
    for event in (*entrez, *pubmed):
        paper.entrez_date = _date_of(event)
        if paper.entrez_date is not None:
            break


def _fill_article_ids(paper: Paper, id_list: etree._Element) -> None:
    for article_id in id_list:
        id_type = article_id.get("IdType")
        value = (article_id.text or "").strip()
        if not value:
            continue
        if id_type == "doi" and paper.doi is None:
            paper.doi = value
        elif id_type == "pmc" and paper.pmcid is None:
            paper.pmcid = value


def _fill_abstract(paper: Paper, abstract: etree._Element) -> None:
    plain_parts: list[str] = []
    markup_parts: list[str] = []
    for child in abstract:
        if child.tag != "AbstractText":
            continue
        text, markup = render_inline(child)
        label = child.get("Label")
        label = (" ".join(label.split()) or None) if label else None
        paper.abstract_sections.append(
            AbstractSection(label=label, category=child.get("NlmCategory"), text=text, markup=markup)
        )
        if not text:
            continue
        if label:
            plain_parts.append(f"{label}: {text}")
            markup_parts.append(f"{_escape(label)}: {markup}")
        else:
            plain_parts.append(text)
            markup_parts.append(markup)
    if plain_parts:
        paper.abstract = "\n".join(plain_parts)
        paper.abstract_markup = "\n".join(markup_parts)


def _fill_comments_corrections(paper: Paper, comments: etree._Element) -> None:
    for item in comments:
        ref_type = item.get("RefType")
        if ref_type == "ErratumIn":
            target = paper.errata
        elif ref_type == "RetractionIn":
            target = paper.retracted_by
        elif ref_type == "RetractionOf":
            target = paper.retraction_of
        else:
            continue
        pmid = source = None
        for sub in item:
            if sub.tag == "PMID":
                pmid = (sub.text or "").strip() or None
            elif sub.tag == "RefSource":
                source = _plain_simple(sub) or None
        ref = pmid or source
        if ref and ref not in target:
            target.append(ref)


def _add_keywords(paper: Paper, keyword_list: etree._Element) -> None:
    for keyword in keyword_list:
        if keyword.tag == "Keyword":
            text = render_inline(keyword)[0]
            if text:
                paper.keywords.append(text)


_AUTHOR_PARTS = ("Author", "LastName", "ForeName", "Initials", "CollectiveName", "Identifier")


def _authors(author_list: etree._Element) -> list[Author]:
    """Authors in order; one C-level walk that skips affiliations entirely."""
    authors: list[Author] = []
    last = fore = initials = collective = orcid = None
    valid = None  # None until the first Author element
    for node in author_list.iter(_AUTHOR_PARTS):
        tag = node.tag
        if tag == "Author":
            if valid and (last or fore or collective):
                authors.append(Author(last, fore, initials, collective, orcid))
            last = fore = initials = collective = orcid = None
            valid = node.get("ValidYN") != "N"
        elif valid is None:
            continue
        elif tag == "LastName":
            last = _leaf(node)
        elif tag == "ForeName":
            fore = _leaf(node)
        elif tag == "Initials":
            initials = _leaf(node)
        elif tag == "CollectiveName":
            collective = render_inline(node)[0] or None
        elif orcid is None and node.get("Source") == "ORCID":
            orcid = normalise_orcid(node.text)
    if valid and (last or fore or collective):
        authors.append(Author(last, fore, initials, collective, orcid))
    return authors


def _book_paper(elem: etree._Element) -> Paper:
    paper = Paper(pmid="", kind="book")
    document = None
    book_data = None
    for child in elem:
        if child.tag == "BookDocument":
            document = child
        elif child.tag == "PubmedBookData":
            book_data = child
    if document is None:
        raise ValueError("PubmedBookArticle has no BookDocument")
    book_title = book_title_markup = None
    chapter_authors: list[Author] | None = None
    book_authors: list[Author] | None = None
    book_year = book_date = None
    contribution = None
    for child in document:
        tag = child.tag
        if tag == "PMID":
            paper.pmid = (child.text or "").strip()
            paper.version = _version(child)
        elif tag == "ArticleIdList":
            _fill_article_ids(paper, child)
        elif tag == "Book":
            for sub in child:
                stag = sub.tag
                if stag == "BookTitle":
                    book_title, book_title_markup = render_inline(sub)
                elif stag == "PubDate":
                    book_year, book_date = _pub_date(sub)
                elif stag == "AuthorList" and sub.get("Type") in (None, "authors") and book_authors is None:
                    book_authors = _authors(sub)
                elif stag == "Volume":
                    paper.volume = _leaf(sub)
        elif tag == "ArticleTitle":
            paper.title, paper.title_markup = render_inline(child)
        elif tag == "VernacularTitle":
            paper.vernacular_title = render_inline(child)[0] or None
        elif tag == "Language":
            language = _leaf(child)
            if language:
                paper.languages.append(language)
        elif tag == "AuthorList":
            if child.get("Type") in (None, "authors") and chapter_authors is None:
                chapter_authors = _authors(child)
        elif tag == "PublicationType":
            paper.publication_types.append(_leaf(child) or "")
        elif tag == "Abstract":
            _fill_abstract(paper, child)
        elif tag == "KeywordList":
            _add_keywords(paper, child)
        elif tag == "ContributionDate":
            contribution = child
        elif tag == "DateRevised":
            paper.revised_date = _date_of(child)
        elif tag == "LocationLabel" and paper.pages is None:
            paper.pages = _plain_simple(child) or None
    paper.journal = book_title or None
    if not paper.title and book_title:
        paper.title, paper.title_markup = book_title, book_title_markup or ""
    paper.authors = chapter_authors if chapter_authors else (book_authors or [])
    if contribution is not None:
        paper.year, paper.pub_date = _pub_date(contribution)
    if paper.year is None:
        paper.year, paper.pub_date = book_year, book_date
    if book_data is not None:
        _fill_pubmed_data(paper, book_data)
    _finish(paper)
    return paper


def _finish(paper: Paper) -> None:
    paper.is_retracted = bool(paper.retracted_by) or "Retracted Publication" in paper.publication_types


# --------------------------------------------------------------------------- small readers


def _version(pmid_elem: etree._Element) -> int:
    value = pmid_elem.get("Version")
    if value is None or not value.strip():
        return 1
    return int(value)


def _leaf(elem: etree._Element) -> str | None:
    """Text of an element the DTD declares as plain #PCDATA, whitespace collapsed."""
    text = elem.text
    if text:
        return collapse_ws(text) or None
    return None


def collapse_ws(text: str) -> str:
    """``" ".join(text.split())``: whitespace runs become one space, ends stripped.

    Printable text (most names, titles and abstracts) holds no whitespace but
    " ", since every other whitespace character is unprintable, so only runs
    of spaces and the ends need work and no list of words is built. Otherwise
    long ASCII text is done with ``str.replace``, several times faster than
    splitting it into words; short text is split, which is cheapest.
    """
    if text.isprintable():
        while "  " in text:
            text = text.replace("  ", " ")
        return text.strip(" ")
    if len(text) < _SHORT_TEXT or not text.isascii():
        return " ".join(text.split())
    for space in _ASCII_SPACES:
        if space in text:
            text = text.replace(space, " ")
    while "  " in text:
        text = text.replace("  ", " ")
    return text.strip()


def _plain_simple(elem: etree._Element) -> str:
    """Text of a leaf-ish element with whitespace collapsed."""
    if len(elem):
        if _parsed_lean(elem):
            raise _BlanksDropped  # children's tails may have lost a blank
        text = "".join(elem.itertext())
    else:
        text = elem.text
    return collapse_ws(text) if text else ""


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() else None


def _month_number(value: str | None) -> int | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        number = int(value)
        return number if 1 <= number <= 12 else None
    return _MONTHS.get(value[:3].lower())


def _date_of(elem: etree._Element) -> date | None:
    """A Year/Month/Day element as a date; None when incomplete or impossible."""
    year = month = day = None
    for child in elem:
        tag = child.tag
        if tag == "Year":
            year = _int_or_none(child.text)
        elif tag == "Month":
            month = _month_number(child.text)
        elif tag == "Day":
            day = _int_or_none(child.text)
    if year is None:
        return None
    try:
        return date(year, month or 1, day or 1)
    except ValueError:
        return None


def _pub_date(elem: etree._Element) -> tuple[int | None, str | None]:
    """(year, readable date) from a PubDate-like element (Year/Month/Day/Season or MedlineDate)."""
    parts: list[str] = []
    medline_date = None
    year = None
    for child in elem:
        tag = child.tag
        text = (child.text or "").strip()
        if not text:
            continue
        if tag == "Year":
            year = _int_or_none(text)
            parts.insert(0, text)
        elif tag in ("Month", "Day", "Season"):
            parts.append(_month_name(text) if tag == "Month" else text)
        elif tag == "MedlineDate":
            medline_date = _WS.sub(" ", text)
    if year is None and medline_date:
        match = _YEAR.search(medline_date)
        year = int(match.group(1)) if match else None
    if parts and parts[0].isdigit():
        readable = " ".join(parts)
    else:
        readable = medline_date or (" ".join(parts) if parts else None)
    return year, readable


def _month_name(value: str) -> str:
    if value.isdigit():
        number = int(value)
        if 1 <= number <= 12:
            return ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[number - 1]
    return value


def _pages(pagination: etree._Element) -> str | None:
    start = end = medline = None
    for child in pagination:
        tag = child.tag
        if tag == "MedlinePgn":
            medline = _plain_simple(child) or None
        elif tag == "StartPage":
            start = _plain_simple(child) or None
        elif tag == "EndPage":
            end = _plain_simple(child) or None
    if medline:
        return medline
    if start and end:
        return f"{start}-{end}"
    return start


def normalise_orcid(value: str | None) -> str | None:
    """Bare ORCID iD from any of the forms PubMed uses (URL, with or without dashes)."""
    if not value:
        return None
    value = value.strip()
    match = _ORCID.search(value)
    if match:
        return match.group(1).upper()
    digits = re.sub(r"[^0-9Xx]", "", value)
    if len(digits) == 16:
        return "-".join(digits[i : i + 4] for i in range(0, 16, 4)).upper()
    return value or None


# --------------------------------------------------------------------------- inline text


def _local_name(tag: str) -> str:
    if tag[0] == "{":
        tag = tag.rpartition("}")[2]
    return tag.rpartition(":")[2]


def _is_math(tag: str) -> bool:
    if tag[0] == "{":
        return tag.startswith("{" + MATHML_NS + "}")
    return tag == "math" or tag.endswith(":math")


def render_inline(elem: etree._Element) -> tuple[str, str]:
    """(plain text, safe markup) of a mixed-content element such as ArticleTitle.

    Markup keeps only ``<i> <b> <u> <sup> <sub>``; all text is HTML-escaped;
    MathML becomes linear text in both; other tags are unwrapped to their text.
    """
    if not len(elem):
        text = elem.text
        if not text:
            return "", ""
        plain = collapse_ws(text)
        return plain, _escape(plain)
    plain_parts: list[str] = []
    markup_parts: list[str] = []
    _render_into(elem, plain_parts, markup_parts, outermost=True)
    return collapse_ws("".join(plain_parts)), collapse_ws("".join(markup_parts))


def _render_into(elem: etree._Element, plain: list[str], markup: list[str], outermost: bool = False) -> None:
    """Append the text and markup of ``elem``'s content; an inline tag around nothing but whitespace is dropped."""
    text = elem.text
    if text:
        plain.append(text)
        markup.append(_escape(text))
    elif len(elem) and _parsed_lean(elem) and not (outermost and _tails_between_children(elem)):
        raise _BlanksDropped  # no leading text: a blank between its children may be gone
    for child in elem:
        tag = child.tag
        if tag in INLINE_TAGS:
            opened = len(markup)
            markup.append(_OPEN_TAG[tag])
            if len(child):
                _render_into(child, plain, markup)
                blank = not "".join(markup[opened + 1 :]).strip()
            else:
                inner = child.text
                blank = not inner or inner.isspace()
                if inner:
                    plain.append(inner)
                    markup.append(_escape(inner))
            if blank:  # keeps markup and plain text in step: no empty <i></i>
                del markup[opened]
            else:
                markup.append(_CLOSE_TAG[tag])
        elif isinstance(tag, str):
            if _is_math(tag):
                linear = math_text(child)
                plain.append(linear)
                markup.append(_escape(linear))
            else:
                _render_into(child, plain, markup)
        elif tag is etree.Entity:
            resolved = html.unescape(child.text or "")
            if resolved != child.text:
                plain.append(resolved)
                markup.append(_escape(resolved))
        tail = child.tail
        if tail:
            plain.append(tail)
            markup.append(_escape(tail))


def _tails_between_children(elem: etree._Element) -> bool:
    """Whether every child but the last has a tail: then a blank dropped from ``elem`` was at its start or end.

    The rendered text of the outermost element is stripped at both ends, so
    those blanks do not show and the lean parse reads it as it is (a title
    or abstract that starts with ``<i>``, which is common, needs no re-parse).
    """
    return all(child.tail is not None for child in elem[:-1])


def _escape(text: str) -> str:
    """HTML-escape text content (``& < >``); the markup is only ever element content."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    return text


# --------------------------------------------------------------------------- MathML

_ACCENTS = {
    ".": "\u0307",
    "˙": "\u0307",
    "\u0307": "\u0307",
    "..": "\u0308",
    "¨": "\u0308",
    "\u0308": "\u0308",
    "¯": "\u0304",
    "‾": "\u0304",
    "_": "\u0304",
    "―": "\u0304",
    "\u0304": "\u0304",
    "\u0305": "\u0304",
    "^": "\u0302",
    "ˆ": "\u0302",
    "\u0302": "\u0302",
    "~": "\u0303",
    "˜": "\u0303",
    "\u0303": "\u0303",
    "→": "\u20d7",
    "\u20d7": "\u20d7",
}
_GROUP_NEEDED = re.compile(r"[\s+\-−=/*·×,;<>≤≥±^_]")
_MATH_TOKENS = frozenset({"mi", "mn", "mo", "ms"})
_MATH_SKIP = frozenset({"annotation", "annotation-xml", "mphantom", "mprescripts", "none", "malignmark", "maligngroup"})


def math_text(elem: etree._Element) -> str:
    """Linear, readable text for a MathML element (``msup`` → ``a^b``, ``mfrac`` → ``a/b``)."""
    return _WS.sub(" ", _math(elem)).strip()


def _group(text: str) -> str:
    text = text.strip()
    if len(text) > 1 and _GROUP_NEEDED.search(text) and not (text[0] == "(" and text[-1] == ")"):
        return f"({text})"
    return text


def _math_children(elem: etree._Element) -> list[etree._Element]:
    return [c for c in elem if isinstance(c.tag, str)]


def _math(elem: etree._Element) -> str:
    tag = elem.tag
    if not isinstance(tag, str):
        return ""
    name = _local_name(tag)
    if name in _MATH_TOKENS or name == "mtext":
        if len(elem) and _parsed_lean(elem):
            raise _BlanksDropped  # a token's text with its children's tails
        text = _WS.sub(" ", "".join(elem.itertext()))
        return text if name == "mtext" else text.strip()
    if name == "mspace":
        return " "
    if name in _MATH_SKIP:
        return ""
    kids = _math_children(elem)
    if name == "semantics":
        return _math(kids[0]) if kids else ""
    if name in ("maction",):
        return _math(kids[0]) if kids else ""
    if name == "msub" and len(kids) >= 2:
        return f"{_math(kids[0])}_{_group(_math(kids[1]))}"
    if name == "msup" and len(kids) >= 2:
        return f"{_math(kids[0])}^{_group(_math(kids[1]))}"
    if name == "msubsup" and len(kids) >= 3:
        return f"{_math(kids[0])}_{_group(_math(kids[1]))}^{_group(_math(kids[2]))}"
    if name == "mover" and len(kids) >= 2:
        return _over(_math(kids[0]), _math(kids[1]).strip())
    if name == "munder" and len(kids) >= 2:
        return f"{_math(kids[0])}_{_group(_math(kids[1]))}"
    if name == "munderover" and len(kids) >= 3:
        return f"{_math(kids[0])}_{_group(_math(kids[1]))}^{_group(_math(kids[2]))}"
    if name == "mfrac" and len(kids) >= 2:
        return f"{_group(_math(kids[0]))}/{_group(_math(kids[1]))}"
    if name == "msqrt":
        inner = "".join(_math(k) for k in kids).strip()
        return f"√{_group(inner)}" if len(inner) <= 1 or not _GROUP_NEEDED.search(inner) else f"√({inner})"
    if name == "mroot" and len(kids) >= 2:
        return f"{_group(_math(kids[0]))}^(1/{_math(kids[1]).strip()})"
    if name == "mmultiscripts":
        return _multiscripts(elem, kids)
    if name == "mfenced":
        opening = elem.get("open", "(")
        closing = elem.get("close", ")")
        separators = (elem.get("separators", ",") or "").split() or [","]
        seps = "".join(separators)
        inner = ""
        for index, kid in enumerate(kids):
            if index:
                inner += seps[min(index - 1, len(seps) - 1)] if seps else ""
            inner += _math(kid)
        return f"{opening}{inner}{closing}"
    if name == "mtable":
        return "[" + "; ".join(_math(row) for row in kids) + "]"
    if name in ("mtr", "mlabeledtr"):
        return ", ".join(_math(cell).strip() for cell in kids)
    # math, mrow, mstyle, mpadded, menclose, merror, mtd and anything unknown: concatenate
    return "".join(_math(k) for k in kids)


def _over(base: str, over: str) -> str:
    accent = _ACCENTS.get(over)
    if accent and base:
        return base + accent
    return f"{base}^{_group(over)}"


def _multiscripts(elem: etree._Element, kids: list[etree._Element]) -> str:
    """Base with post- and pre-scripts: ``^3He``, ``X_a^b``."""
    if not kids:
        return ""
    base = _math(kids[0])
    post: list[etree._Element] = []
    pre: list[etree._Element] = []
    target = post
    for kid in kids[1:]:
        if _local_name(kid.tag) == "mprescripts":
            target = pre
            continue
        target.append(kid)

    def scripts(items: list[etree._Element]) -> str:
        out = ""
        for index in range(0, len(items), 2):
            sub = _math(items[index]).strip()
            sup = _math(items[index + 1]).strip() if index + 1 < len(items) else ""
            if sub:
                out += f"_{_group(sub)}"
            if sup:
                out += f"^{_group(sup)}"
        return out

    return f"{scripts(pre)}{base}{scripts(post)}"
