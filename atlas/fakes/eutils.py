"""A loopback fake of NCBI E-utilities (ESearch and EFetch) over a corpus directory.

It behaves like NCBI where it hurts a client: a per-client sliding 1-second
rate limit answered with 429 and NCBI's JSON body, the 9,999-record ESearch
cap and its in-band ``<ERROR>``, ``edat``/``mdat`` windows, POST EFetch, PMC
full text, and faults switchable at run time (5xx, truncated XML, in-band
errors, HTML pages, slow replies, 429 storms, rejected requests).

The corpus is a folder of PubMed XML files (``*.xml`` or ``*.xml.gz``, each a
``PubmedArticleSet``); PMC JATS files live in ``<corpus>/pmc/PMC<n>.xml``.
Records are indexed with lxml directly so the fake never depends on the
parser it is used to test. Dates: ``edat`` is the History entrez date (else
pubmed), ``mdat`` is DateRevised (else the entrez date); ``pdat`` is served
as the entrez date, an approximation good enough for a fake.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

from lxml import etree

from atlas.fakes.loopback import LoopbackThread

log = logging.getLogger(__name__)

ESEARCH_CAP = 9_999
BASE_PATH = "/entrez/eutils/"

ESEARCH_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8" ?>\n'
    b'<!DOCTYPE eSearchResult PUBLIC "-//NLM//DTD esearch 20060628//EN" '
    b'"https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20060628/esearch.dtd">\n'
)
EFETCH_HEAD = (
    b'<?xml version="1.0" ?>\n'
    b'<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" '
    b'"https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n'
)
EFETCH_ERROR_HEAD = (
    b'<?xml version="1.0" encoding="UTF-8" ?>\n'
    b'<!DOCTYPE eFetchResult PUBLIC "-//NLM//DTD efetch 20131226//EN" '
    b'"https://eutils.ncbi.nlm.nih.gov/eutils/dtd/20131226/efetch.dtd">\n'
)
PMC_HEAD = (
    b'<?xml version="1.0" ?>\n'
    b'<!DOCTYPE pmc-articleset PUBLIC "-//NLM//DTD ARTICLE SET 2.0//EN" '
    b'"https://dtd.nlm.nih.gov/ncbi/pmc/articleset/nlm-articleset-2.0.dtd">\n'
)


def retstart_cap_message(cap: int = ESEARCH_CAP) -> str:
    """NCBI's wording when ``retstart`` goes past the PubMed ESearch cap."""
    return (
        "Search Backend failed: Exception:\n"
        f"'retstart' cannot be larger than {cap - 1}. For PubMed, ESearch can only retrieve the first "
        f"{cap:,} records matching the query. To obtain more than {cap:,} PubMed records, consider using "
        "EDirect that contains additional logic to batch PubMed search results automatically so that an "
        "arbitrary number can be retrieved. For details see https://www.ncbi.nlm.nih.gov/books/NBK25499/"
    )


def html_error_page(status: int) -> bytes:
    """An error page shaped like the ones NCBI's front end serves (sometimes with status 200)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>NCBI - WWW Error {status} Diagnostic</title></head>\n<body>\n"
        f"<h1>Error {status}</h1><p>The server encountered an internal error or misconfiguration and was "
        "unable to complete your request.</p>\n<p>Please try again later.</p>\n</body></html>\n"
    ).encode()


# ---------------------------------------------------------------- corpus index


@dataclass(slots=True)
class IndexedRecord:
    """One PubMed record as the fake serves and searches it."""

    pmid: str
    xml: bytes
    title: str
    abstract: str
    mesh: str
    keywords: str
    publication_types: str
    languages: str
    entrez: date
    modified: date

    def field_text(self, name: str) -> str:
        if name == "all":
            return "\n".join((self.title, self.abstract, self.mesh, self.keywords, self.publication_types))
        if name == "tiab":
            return self.title + "\n" + self.abstract
        return getattr(self, name)


def _text(element: etree._Element | None) -> str:
    return "" if element is None else " ".join("".join(element.itertext()).split())


def _history_date(article: etree._Element, status: str) -> date | None:
    for node in article.iterfind(".//History/PubMedPubDate"):
        if node.get("PubStatus") == status:
            return _ymd(node)
    return None


def _ymd(node: etree._Element | None) -> date | None:
    if node is None:
        return None
    try:
        return date(int(node.findtext("Year")), int(node.findtext("Month") or 1), int(node.findtext("Day") or 1))
    except (TypeError, ValueError):
        return None


def index_article(article: etree._Element) -> IndexedRecord | None:
    """Index a ``PubmedArticle`` or ``PubmedBookArticle`` element; None if it has no PMID."""
    pmid_node = article.find("MedlineCitation/PMID")
    if pmid_node is None:
        pmid_node = article.find("BookDocument/PMID")
    pmid = (pmid_node.text or "").strip() if pmid_node is not None else ""
    if not pmid:
        return None
    title_node = article.find(".//ArticleTitle")
    if title_node is None:
        title_node = article.find(".//BookTitle")
    abstract = " ".join(_text(node) for node in article.iterfind(".//Abstract/AbstractText"))
    entrez = (
        _history_date(article, "entrez")
        or _history_date(article, "pubmed")
        or _history_date(article, "medline")
        or _ymd(article.find(".//DateCompleted"))
        or _ymd(article.find(".//DateRevised"))
        or date(1970, 1, 1)
    )
    modified = _ymd(article.find("MedlineCitation/DateRevised")) or _ymd(article.find(".//DateRevised")) or entrez
    mesh = "\n".join(_text(node) for node in article.iterfind(".//MeshHeading/*"))
    return IndexedRecord(
        pmid=pmid,
        xml=etree.tostring(article, encoding="utf-8", xml_declaration=False, with_tail=False),
        title=_text(title_node).lower(),
        abstract=abstract.lower(),
        mesh=mesh.lower(),
        keywords="\n".join(_text(node) for node in article.iterfind(".//Keyword")).lower(),
        publication_types="\n".join(_text(node) for node in article.iterfind(".//PublicationType")).lower(),
        languages="\n".join(_text(node) for node in article.iterfind(".//Language")).lower(),
        entrez=entrez,
        modified=max(modified, entrez),
    )


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True, remove_blank_text=False)


def iter_indexed(source: bytes) -> Iterable[IndexedRecord]:
    """Index every article in a PubmedArticleSet (or a single article) held in memory."""
    root = etree.fromstring(source, parser=_parser())
    articles = [root] if root.tag in ("PubmedArticle", "PubmedBookArticle") else list(
        root.iterchildren("PubmedArticle", "PubmedBookArticle")
    )
    for article in articles:
        record = index_article(article)
        if record is not None:
            yield record


def load_corpus(directory: Path) -> dict[str, IndexedRecord]:
    """Index every ``*.xml``/``*.xml.gz`` in ``directory`` (not its subfolders); later files win on a PMID."""
    records: dict[str, IndexedRecord] = {}
    paths = sorted(p for p in directory.iterdir() if p.is_file() and (p.name.endswith(".xml") or p.name.endswith(".xml.gz")))
    for path in paths:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as handle:
            for _, element in etree.iterparse(
                handle,
                events=("end",),
                tag=("PubmedArticle", "PubmedBookArticle"),
                resolve_entities=False,
                no_network=True,
                load_dtd=False,
                huge_tree=True,
            ):
                record = index_article(element)
                if record is not None:
                    records[record.pmid] = record
                element.clear(keep_tail=True)
    return records


def load_pmc(directory: Path) -> dict[str, bytes]:
    """PMC JATS files keyed by their number: ``pmc/PMC123.xml`` serves id 123 and PMC123."""
    found: dict[str, bytes] = {}
    folder = directory / "pmc"
    if folder.is_dir():
        for path in sorted(folder.glob("PMC*.xml")):
            number = path.stem[3:]
            if number.isdigit():
                found[number] = path.read_bytes()
    return found


# ---------------------------------------------------------------- term matching

_FIELDS = {
    "tiab": "tiab", "title/abstract": "tiab", "ti": "title", "title": "title", "ab": "abstract", "abstract": "abstract",
    "mh": "mesh", "mesh": "mesh", "mesh terms": "mesh", "majr": "mesh", "mesh major topic": "mesh",
    "mh:noexp": "mesh", "ot": "keywords", "kw": "keywords", "keyword": "keywords", "pt": "publication_types",
    "publication type": "publication_types", "la": "languages", "language": "languages",
    "all": "all", "all fields": "all", "tw": "all", "text word": "all",
}
_TOKEN = re.compile(
    r'\s*(?:(?P<open>\()|(?P<close>\))|"(?P<phrase>[^"]*)"\s*(?:\[(?P<ptag>[^\]]*)\])?'
    r'|(?P<word>[^\s()"\[\]]+)\s*(?:\[(?P<wtag>[^\]]*)\])?)'
)

Predicate = Callable[[IndexedRecord], bool]


class QuerySyntaxError(ValueError):
    """The term could not be read (unbalanced parentheses or quotes)."""


def compile_term(term: str) -> Predicate:
    """A predicate for a PubMed-style term: quoted phrases or words with optional [field] tags,
    AND/OR/NOT applied left to right as PubMed does, parentheses for grouping.

    Matching is a case-insensitive substring test on the tagged field; untagged
    terms search title, abstract, MeSH, keywords and publication types.
    """
    tokens: list[tuple[str, str, str]] = []
    position = 0
    text = term.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            raise QuerySyntaxError(f"cannot read the term at {text[position:position + 20]!r}")
        position = match.end()
        if match.group("open"):
            tokens.append(("(", "", ""))
        elif match.group("close"):
            tokens.append((")", "", ""))
        elif match.group("phrase") is not None:
            tokens.append(("term", match.group("phrase"), match.group("ptag") or ""))
        elif match.group("word"):
            word, tag = match.group("word"), match.group("wtag") or ""
            if word in ("AND", "OR", "NOT") and not tag:
                tokens.append(("op", word, ""))
            else:
                tokens.append(("term", word, tag))
        if text[position:].strip() == "":
            break
    predicate, rest = _parse_expression(tokens, 0)
    if rest != len(tokens):
        raise QuerySyntaxError(f"unexpected {tokens[rest][1] or tokens[rest][0]!r} in the term")
    return predicate


def _parse_expression(tokens: list[tuple[str, str, str]], index: int) -> tuple[Predicate, int]:
    left, index = _parse_operand(tokens, index)
    while index < len(tokens) and tokens[index][0] != ")":
        operator = "AND"
        if tokens[index][0] == "op":
            operator = tokens[index][1]
            index += 1
        right, index = _parse_operand(tokens, index)
        left = _combine(operator, left, right)
    return left, index


def _combine(operator: str, left: Predicate, right: Predicate) -> Predicate:
    if operator == "OR":
        return lambda record: left(record) or right(record)
    if operator == "NOT":
        return lambda record: left(record) and not right(record)
    return lambda record: left(record) and right(record)


def _parse_operand(tokens: list[tuple[str, str, str]], index: int) -> tuple[Predicate, int]:
    if index >= len(tokens):
        raise QuerySyntaxError("the term ends where a search term was expected")
    kind, value, tag = tokens[index]
    if kind == "(":
        inner, index = _parse_expression(tokens, index + 1)
        if index >= len(tokens) or tokens[index][0] != ")":
            raise QuerySyntaxError("unbalanced parentheses in the term")
        return inner, index + 1
    if kind != "term":
        raise QuerySyntaxError(f"unexpected {value or kind!r} where a search term was expected")
    field_name = _FIELDS.get(tag.strip().lower(), "all")
    needle = " ".join(value.replace("*", "").split()).lower()
    if not needle:
        return (lambda record: False), index + 1
    return (lambda record: needle in record.field_text(field_name)), index + 1


def parse_ncbi_date(value: str, *, end: bool) -> date:
    """YYYY, YYYY/MM or YYYY/MM/DD (also with dashes); ``end`` picks the last day of a partial date."""
    parts = [p for p in re.split(r"[/\-.]", value.strip()) if p]
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"invalid date {value!r}")
    year = int(parts[0])
    if len(parts) == 1:
        return date(year, 12, 31) if end else date(year, 1, 1)
    month = int(parts[1])
    if len(parts) == 2:
        if not end:
            return date(year, month, 1)
        following = date(year + month // 12, month % 12 + 1, 1)
        return following - timedelta(days=1)
    return date(year, month, int(parts[2]))


# ---------------------------------------------------------------- faults


@dataclass(slots=True)
class Fault:
    """One injected misbehaviour, applied to one request."""

    kind: str  # status | truncate | in_band_error | html | slow | storm | reject
    endpoint: str | None = None
    status: int = 200
    seconds: float = 0.0
    message: str = ""
    retry_after: float | None = None


class Faults:
    """Misbehaviours queued for the next requests, consumed one per request (thread-safe).

    A request the rate limit already answers with 429 consumes no fault.

    Each method queues ``n`` faults; ``endpoint`` ("esearch.fcgi" or
    "efetch.fcgi") limits them to one endpoint, other requests pass by.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Fault] = deque()

    def _add(self, n: int, fault: Fault) -> Faults:
        with self._lock:
            for _ in range(n):
                self._queue.append(replace(fault))
        return self

    def server_errors(self, n: int = 1, *, status: int = 503, endpoint: str | None = None) -> Faults:
        """The next ``n`` replies are 5xx with an HTML body, as NCBI's front end sends."""
        if not 500 <= status <= 599:
            raise ValueError("server_errors needs a 5xx status")
        return self._add(n, Fault("status", endpoint, status=status))

    def truncate(self, n: int = 1, *, endpoint: str | None = None) -> Faults:
        """The next ``n`` replies are cut off mid-body (mid-record for EFetch)."""
        return self._add(n, Fault("truncate", endpoint))

    def in_band_error(self, n: int = 1, *, message: str = "Search Backend failed: Database is not supported",
                      endpoint: str | None = None) -> Faults:
        """The next ``n`` replies are HTTP 200 with an ``<ERROR>`` element and no results."""
        return self._add(n, Fault("in_band_error", endpoint, message=message))

    def html_page(self, n: int = 1, *, status: int = 200, endpoint: str | None = None) -> Faults:
        """The next ``n`` replies are an HTML error page (status 200 by default, as NCBI sometimes does)."""
        return self._add(n, Fault("html", endpoint, status=status))

    def slow(self, n: int = 1, *, seconds: float = 1.0, endpoint: str | None = None) -> Faults:
        """The next ``n`` replies wait ``seconds`` before answering normally."""
        return self._add(n, Fault("slow", endpoint, seconds=seconds))

    def rate_limit_storm(self, n: int, *, retry_after: float | None = None, endpoint: str | None = None) -> Faults:
        """The next ``n`` requests get 429 whatever the rate (optionally with a Retry-After header)."""
        return self._add(n, Fault("storm", endpoint, status=429, retry_after=retry_after))

    def reject(self, n: int = 1, *, status: int = 400, message: str = "Bad Request",
               endpoint: str | None = None) -> Faults:
        """The next ``n`` requests are refused with a 4xx and a JSON error body."""
        if not 400 <= status <= 499:
            raise ValueError("reject needs a 4xx status")
        return self._add(n, Fault("reject", endpoint, status=status, message=message))

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def take(self, endpoint: str) -> Fault | None:
        """Remove and return the first queued fault that applies to ``endpoint``."""
        with self._lock:
            for index, fault in enumerate(self._queue):
                if fault.endpoint is None or fault.endpoint == endpoint:
                    del self._queue[index]
                    return fault
        return None


# ---------------------------------------------------------------- the server


@dataclass(slots=True)
class ReceivedRequest:
    """What the fake saw: for tests asserting tool/email/api_key and for rate measurements."""

    method: str
    endpoint: str
    params: dict[str, str]
    client: str
    at: float
    status: int = 0


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "text/xml; charset=UTF-8"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: FakeEutils

    def handle_error(self, request: object, client_address: object) -> None:
        log.debug("fake E-utilities: connection error from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._serve(b"")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self._serve(self.rfile.read(length) if length else b"")

    def _serve(self, body: bytes) -> None:
        url = urlsplit(self.path)
        pairs = parse_qsl(url.query, keep_blank_values=True)
        if body:
            pairs += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        params: dict[str, str] = {}
        for key, value in pairs:
            params[key] = f"{params[key]},{value}" if key == "id" and key in params else value
        reply = self.server.app.handle(self.command, url.path, params, self.client_address[0])
        if reply.delay:
            time.sleep(reply.delay)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server signature)
        log.debug("fake E-utilities: " + format, *args)


class FakeEutils:
    """Serve a corpus folder as NCBI E-utilities on 127.0.0.1.

    ``rate_limit`` requests per second per client (per ``api_key``, else per
    IP), ``api_key_rate_limit`` with a key; ``api_keys`` (if given) is the set
    of keys accepted, others get NCBI's 400. ``search_cap`` is ESearch's cap
    (9,999 like PubMed; lower it to exercise window splitting cheaply).
    """

    def __init__(
        self,
        corpus_dir: Path | str | None = None,
        *,
        port: int = 0,
        rate_limit: float = 3.0,
        api_key_rate_limit: float = 10.0,
        api_keys: Iterable[str] | None = None,
        search_cap: int = ESEARCH_CAP,
        rate_limit_retry_after: float | None = None,
        max_logged_requests: int = 100_000,
    ):
        self.corpus_dir = Path(corpus_dir) if corpus_dir is not None else None
        self.port = port
        self.rate_limit = rate_limit
        self.api_key_rate_limit = api_key_rate_limit
        self.api_keys = set(api_keys) if api_keys is not None else None
        self.search_cap = search_cap
        self.rate_limit_retry_after = rate_limit_retry_after
        self.faults = Faults()
        self._lock = threading.Lock()
        self._records: dict[str, IndexedRecord] = {}
        self._pmc: dict[str, bytes] = {}
        self._term_cache: dict[str, list[IndexedRecord]] = {}
        self._windows: dict[str, deque[float]] = {}
        self._requests: deque[ReceivedRequest] = deque(maxlen=max_logged_requests)
        self.request_count = 0
        self.sent_429 = 0
        self._loop = LoopbackThread()
        if self.corpus_dir is not None:
            self.reload()

    # -- corpus

    def reload(self) -> None:
        """Re-read the corpus folder."""
        if self.corpus_dir is None:
            return
        if not self.corpus_dir.is_dir():
            raise FileNotFoundError(f"{self.corpus_dir}: corpus folder not found")
        records = load_corpus(self.corpus_dir)
        pmc = load_pmc(self.corpus_dir)
        with self._lock:
            self._records = records
            self._pmc = pmc
            self._term_cache.clear()

    def add_records(self, xml: bytes) -> list[str]:
        """Add (or replace) records from PubmedArticleSet XML; returns their PMIDs."""
        added = list(iter_indexed(xml))
        with self._lock:
            for record in added:
                self._records[record.pmid] = record
            self._term_cache.clear()
        return [record.pmid for record in added]

    def add_pmc(self, pmcid: str, xml: bytes) -> None:
        with self._lock:
            self._pmc[pmcid.upper().removeprefix("PMC")] = xml

    def revise(self, pmid: str, revised: date) -> None:
        """Give a record a new DateRevised (its modification date), as NLM does when it re-indexes."""
        with self._lock:
            record = self._records[pmid]
        root = etree.fromstring(record.xml, parser=_parser())
        citation = root.find("MedlineCitation")
        if citation is None:
            raise ValueError(f"PMID {pmid} has no MedlineCitation to revise")
        node = citation.find("DateRevised")
        if node is None:
            node = etree.Element("DateRevised")
            citation.find("PMID").addnext(node)
        node.clear(keep_tail=True)
        for tag, value in (("Year", f"{revised.year:04d}"), ("Month", f"{revised.month:02d}"), ("Day", f"{revised.day:02d}")):
            etree.SubElement(node, tag).text = value
        updated = index_article(root)
        assert updated is not None
        with self._lock:
            self._records[pmid] = updated
            self._term_cache.clear()

    def pmids(self) -> list[str]:
        with self._lock:
            return sorted(self._records, key=int)

    def record(self, pmid: str) -> IndexedRecord:
        with self._lock:
            return self._records[pmid]

    # -- lifecycle

    @property
    def url(self) -> str:
        """Base URL ending in '/', to use as ``eutils_url``."""
        if not self._loop.running:
            raise RuntimeError("FakeEutils is not started")
        return f"http://127.0.0.1:{self._loop.port}{BASE_PATH}"

    def start(self) -> FakeEutils:
        if self._loop.running:
            return self
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.app = self
        self._loop.start(server, "fake-eutils")
        return self

    def stop(self) -> None:
        self._loop.stop()

    def __enter__(self) -> FakeEutils:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- observations

    @property
    def requests(self) -> list[ReceivedRequest]:
        with self._lock:
            return list(self._requests)

    def reset_stats(self) -> None:
        with self._lock:
            self._requests.clear()
            self._windows.clear()
            self.request_count = 0
            self.sent_429 = 0

    def max_requests_in_any_second(self, client: str | None = None) -> int:
        """The most requests seen inside any 1-second span (for checking a client's pacing)."""
        times = sorted(r.at for r in self.requests if client is None or r.client == client)
        best, start = 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] >= 1.0:
                start += 1
            best = max(best, end - start + 1)
        return best

    # -- request handling

    def handle(self, method: str, path: str, params: dict[str, str], client_ip: str) -> Reply:
        """Answer one request; runs on the server's handler threads."""
        endpoint = path.rstrip("/").rsplit("/", 1)[-1]
        api_key = params.get("api_key", "")
        now = time.monotonic()
        received = ReceivedRequest(method, endpoint, dict(params), client_ip, now)
        with self._lock:
            self.request_count += 1
            self._requests.append(received)
        reply = self._answer(endpoint, params, api_key, client_ip, now)
        received.status = reply.status
        if reply.status == 429:
            with self._lock:
                self.sent_429 += 1
        return reply

    def _answer(self, endpoint: str, params: dict[str, str], api_key: str, client_ip: str, now: float) -> Reply:
        if endpoint not in ("esearch.fcgi", "efetch.fcgi"):
            return Reply(404, html_error_page(404), "text/html; charset=utf-8")
        if api_key and self.api_keys is not None and api_key not in self.api_keys:
            body = {"error": "API key invalid", "api-key": api_key, "type": "invalid", "status": "unknown"}
            return Reply(400, json.dumps(body).encode(), "application/json")
        limited = self._check_rate(api_key, client_ip, now)
        if limited is not None:
            return limited
        fault = self.faults.take(endpoint)
        if fault is not None and fault.kind == "storm":
            limit = self.api_key_rate_limit if api_key else self.rate_limit
            return self._too_many(api_key or client_ip, 1, limit, fault.retry_after)
        delay = 0.0
        if fault is not None:
            if fault.kind == "slow":
                delay = fault.seconds
            elif fault.kind == "status":
                return Reply(fault.status, html_error_page(fault.status), "text/html; charset=utf-8")
            elif fault.kind == "html":
                return Reply(fault.status, html_error_page(fault.status or 500), "text/html; charset=utf-8")
            elif fault.kind == "reject":
                return Reply(fault.status, json.dumps({"error": fault.message}).encode(), "application/json")
            elif fault.kind == "in_band_error":
                return self._in_band_error(endpoint, fault.message)
        if endpoint == "esearch.fcgi":
            reply = self._esearch(params)
        else:
            reply = self._efetch(params)
        if fault is not None and fault.kind == "truncate" and reply.status == 200:
            reply.body = reply.body[: max(1, int(len(reply.body) * 0.6))]
        reply.delay = delay
        return reply

    def _check_rate(self, api_key: str, client_ip: str, now: float) -> Reply | None:
        limit = self.api_key_rate_limit if api_key else self.rate_limit
        key = api_key or client_ip
        with self._lock:
            window = self._windows.setdefault(key, deque())
            while window and now - window[0] >= 1.0:
                window.popleft()
            if len(window) >= limit:
                count = len(window) + 1
            else:
                window.append(now)
                return None
        return self._too_many(key, count, limit, self.rate_limit_retry_after)

    @staticmethod
    def _too_many(key: str, count: int, limit: float, retry_after: float | None) -> Reply:
        body = {"error": "API rate limit exceeded", "api-key": key, "count": str(count), "limit": f"{limit:g}"}
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        return Reply(429, json.dumps(body).encode(), "application/json", headers)

    @staticmethod
    def _in_band_error(endpoint: str, message: str) -> Reply:
        if endpoint == "esearch.fcgi":
            body = ESEARCH_HEAD + f"<eSearchResult><ERROR>{escape(message)}</ERROR></eSearchResult>\n".encode()
        else:
            body = EFETCH_ERROR_HEAD + f"<eFetchResult>\n\t<ERROR>{escape(message)}</ERROR>\n</eFetchResult>\n".encode()
        return Reply(200, body)

    # -- ESearch

    def _matching(self, term: str) -> list[IndexedRecord]:
        with self._lock:
            cached = self._term_cache.get(term)
            records = list(self._records.values())
        if cached is not None:
            return cached
        predicate = compile_term(term)
        matched = [record for record in records if predicate(record)]
        matched.sort(key=lambda r: (r.entrez, int(r.pmid)), reverse=True)
        with self._lock:
            self._term_cache[term] = matched
        return matched

    def _esearch(self, params: dict[str, str]) -> Reply:
        if params.get("db", "pubmed") != "pubmed":
            return self._in_band_error("esearch.fcgi", f"Invalid db name specified: {params.get('db')}")
        term = params.get("term", "").strip()
        if not term:
            return self._in_band_error("esearch.fcgi", "Empty term and query_key - nothing todo")
        try:
            retstart = int(params.get("retstart") or 0)
            retmax = int(params.get("retmax") or 20)
        except ValueError:
            return self._in_band_error("esearch.fcgi", "retstart and retmax must be integers")
        if retstart > self.search_cap - 1:
            return self._in_band_error("esearch.fcgi", retstart_cap_message(self.search_cap))
        try:
            matched = self._matching(term)
        except QuerySyntaxError as exc:
            return self._in_band_error("esearch.fcgi", f"Query syntax error: {exc}")
        mindate, maxdate = params.get("mindate"), params.get("maxdate")
        if mindate and maxdate:
            try:
                low, high = parse_ncbi_date(mindate, end=False), parse_ncbi_date(maxdate, end=True)
            except ValueError as exc:
                return self._in_band_error("esearch.fcgi", str(exc))
            datetype = params.get("datetype", "pdat")
            attribute = "modified" if datetype == "mdat" else "entrez"
            matched = [r for r in matched if low <= getattr(r, attribute) <= high]
        count = len(matched)
        stop = min(retstart + max(retmax, 0), self.search_cap, count)
        ids = [r.pmid for r in matched[retstart:stop]]
        clamped = retstart + retmax > self.search_cap and count > stop
        if params.get("retmode") == "json":
            result: dict[str, object] = {
                "count": str(count), "retmax": str(len(ids)), "retstart": str(retstart), "idlist": ids,
                "translationset": [], "querytranslation": term,
            }
            if clamped:
                result["warninglist"] = {"outputmessages": [f"Restrictions achieved. start and count adjusted to {retstart}, {len(ids)}"]}
            body = json.dumps({"header": {"type": "esearch", "version": "0.3"}, "esearchresult": result}).encode()
            return Reply(200, body, "application/json; charset=UTF-8")
        id_list = "<IdList>\n" + "".join(f"<Id>{pmid}</Id>\n" for pmid in ids) + "</IdList>" if ids else "<IdList/>"
        warnings = ""
        if clamped:
            warnings = (
                "<WarningList><OutputMessage>Restrictions achieved. start and count adjusted to "
                f"{retstart}, {len(ids)}</OutputMessage></WarningList>"
            )
        elif count == 0:
            warnings = "<WarningList><OutputMessage>No items found.</OutputMessage></WarningList>"
        body = (
            f"<eSearchResult><Count>{count}</Count><RetMax>{len(ids)}</RetMax><RetStart>{retstart}</RetStart>"
            f"{id_list}<TranslationSet/><QueryTranslation>{escape(term)}</QueryTranslation>{warnings}</eSearchResult>\n"
        )
        return Reply(200, ESEARCH_HEAD + body.encode())

    # -- EFetch

    def _efetch(self, params: dict[str, str]) -> Reply:
        db = params.get("db", "")
        ids = [part for part in re.split(r"[,\s]+", params.get("id", "")) if part]
        if db not in ("pubmed", "pmc"):
            return self._efetch_error(400, f"Invalid db name specified: {db}")
        if not ids:
            return self._efetch_error(400, "Empty id list - nothing todo")
        if params.get("retmode", "xml") != "xml":
            return self._efetch_error(400, f"retmode {params.get('retmode')!r} is not served by this fake")
        if db == "pmc":
            return self._efetch_pmc(ids)
        with self._lock:
            found = [self._records[pmid].xml for pmid in ids if pmid in self._records]
        body = EFETCH_HEAD + b"<PubmedArticleSet>\n" + b"\n".join(found) + (b"\n" if found else b"") + b"</PubmedArticleSet>\n"
        return Reply(200, body)

    def _efetch_pmc(self, ids: Sequence[str]) -> Reply:
        parts: list[bytes] = []
        for raw in ids:
            number = raw.upper().removeprefix("PMC")
            with self._lock:
                document = self._pmc.get(number)
            if document is None:
                parts.append(f'<error id="{escape(number)}">The following PMCID is not available: {escape(number)}</error>'.encode())
                continue
            root = etree.fromstring(document, parser=_parser())
            articles = [root] if etree.QName(root).localname == "article" else [
                el for el in root.iter() if isinstance(el.tag, str) and etree.QName(el).localname == "article"
            ][:1]
            parts.extend(etree.tostring(article, encoding="utf-8", xml_declaration=False, with_tail=False) for article in articles)
        return Reply(200, PMC_HEAD + b"<pmc-articleset>" + b"\n".join(parts) + b"</pmc-articleset>\n")

    @staticmethod
    def _efetch_error(status: int, message: str) -> Reply:
        return Reply(status, EFETCH_ERROR_HEAD + f"<eFetchResult>\n\t<ERROR>{escape(message)}</ERROR>\n</eFetchResult>\n".encode())


# ---------------------------------------------------------------- synthetic corpus

_ARTICLE = Template(
    """<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM" IndexingMethod="Automated"><PMID Version="1">$pmid</PMID><DateCompleted><Year>$cy</Year><Month>$cm</Month><Day>$cd</Day></DateCompleted><DateRevised><Year>$ry</Year><Month>$rm</Month><Day>$rd</Day></DateRevised><Article PubModel="Print-Electronic"><Journal><ISSN IssnType="Electronic">$issn</ISSN><JournalIssue CitedMedium="Internet"><Volume>$volume</Volume><Issue>$issue</Issue><PubDate><Year>$ey</Year><Month>$month_name</Month></PubDate></JournalIssue><Title>$journal</Title><ISOAbbreviation>$journal_abbrev</ISOAbbreviation></Journal><ArticleTitle>$title</ArticleTitle><Pagination><StartPage>$page</StartPage><EndPage>$end_page</EndPage><MedlinePgn>$page-$end_page</MedlinePgn></Pagination><ELocationID EIdType="doi" ValidYN="Y">10.5555/synthetic.$pmid</ELocationID><Abstract><AbstractText Label="BACKGROUND" NlmCategory="BACKGROUND">$background</AbstractText><AbstractText Label="METHODS" NlmCategory="METHODS">$methods</AbstractText><AbstractText Label="RESULTS" NlmCategory="RESULTS">$results</AbstractText><AbstractText Label="CONCLUSIONS" NlmCategory="CONCLUSIONS">$conclusions</AbstractText><CopyrightInformation>&#xa9; $ey The Authors.</CopyrightInformation></Abstract><AuthorList CompleteYN="Y"><Author ValidYN="Y"><LastName>$last1</LastName><ForeName>$fore1</ForeName><Initials>$init1</Initials><AffiliationInfo><Affiliation>Department of Medicine, Example University, Bergen, Norway.</Affiliation></AffiliationInfo></Author><Author ValidYN="Y"><LastName>$last2</LastName><ForeName>$fore2</ForeName><Initials>$init2</Initials></Author><Author ValidYN="Y"><CollectiveName>ME/CFS Research Network</CollectiveName></Author></AuthorList><Language>eng</Language><PublicationTypeList><PublicationType UI="D016428">Journal Article</PublicationType>$extra_type</PublicationTypeList><ArticleDate DateType="Electronic"><Year>$ey</Year><Month>$em</Month><Day>$ed</Day></ArticleDate></Article><MedlineJournalInfo><Country>England</Country><MedlineTA>$journal_abbrev</MedlineTA><NlmUniqueID>101$issue_id</NlmUniqueID><ISSNLinking>$issn</ISSNLinking></MedlineJournalInfo><CitationSubset>IM</CitationSubset><MeshHeadingList><MeshHeading><DescriptorName UI="D006801" MajorTopicYN="N">Humans</DescriptorName></MeshHeading><MeshHeading><DescriptorName UI="$mesh_ui" MajorTopicYN="Y">$mesh</DescriptorName></MeshHeading><MeshHeading><DescriptorName UI="D000328" MajorTopicYN="N">Adult</DescriptorName></MeshHeading></MeshHeadingList><KeywordList Owner="NOTNLM"><Keyword MajorTopicYN="N">$keyword</Keyword><Keyword MajorTopicYN="N">post-exertional malaise</Keyword></KeywordList></MedlineCitation><PubmedData><History><PubMedPubDate PubStatus="received"><Year>$ey</Year><Month>1</Month><Day>2</Day></PubMedPubDate><PubMedPubDate PubStatus="entrez"><Year>$ey</Year><Month>$em_short</Month><Day>$ed_short</Day><Hour>6</Hour><Minute>21</Minute></PubMedPubDate><PubMedPubDate PubStatus="pubmed"><Year>$py</Year><Month>$pm</Month><Day>$pd</Day><Hour>6</Hour><Minute>0</Minute></PubMedPubDate><PubMedPubDate PubStatus="medline"><Year>$cy</Year><Month>$cm</Month><Day>$cd</Day><Hour>6</Hour><Minute>0</Minute></PubMedPubDate></History><PublicationStatus>ppublish</PublicationStatus><ArticleIdList><ArticleId IdType="pubmed">$pmid</ArticleId><ArticleId IdType="doi">10.5555/synthetic.$pmid</ArticleId></ArticleIdList></PubmedData></PubmedArticle>"""
)

_TOPICS = (
    ("Cardiopulmonary exercise testing on two consecutive days in myalgic encephalomyelitis/chronic fatigue syndrome",
     "Fatigue Syndrome, Chronic", "D015673", "two-day CPET"),
    ("Orthostatic intolerance and cerebral blood flow in patients with ME/CFS",
     "Fatigue Syndrome, Chronic", "D015673", "orthostatic intolerance"),
    ("Immune signatures after exertion in chronic fatigue syndrome: a case-control study",
     "Fatigue Syndrome, Chronic", "D015673", "immunology"),
    ("Sleep quality and symptom burden in systemic exertion intolerance disease",
     "Fatigue Syndrome, Chronic", "D015673", "sleep"),
    ("Post-exertional malaise in myalgic encephalomyelitis: a questionnaire validation study",
     "Fatigue Syndrome, Chronic", "D015673", "DePaul Symptom Questionnaire"),
)
_OFF_TOPIC = ("Back pain in primary care: a cohort study of physiotherapy referral", "Low Back Pain", "D017116", "back pain")
_NAMES = (("Hansen", "Ingrid", "I"), ("Okafor", "Chidi", "C"), ("Nakamura", "Yui", "Y"), ("Silva", "Ana", "A"),
          ("Müller", "Jörg", "J"), ("Kowalski", "Piotr", "P"))
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def synthetic_article(pmid: int, entrez: date, revised: date, *, on_topic: bool = True) -> bytes:
    """One realistic PubmedArticle (structured abstract, MeSH, history dates) built from a template."""
    title, mesh, mesh_ui, keyword = _TOPICS[pmid % len(_TOPICS)] if on_topic else _OFF_TOPIC
    first, second = _NAMES[pmid % len(_NAMES)], _NAMES[(pmid // 7) % len(_NAMES)]
    participants = 20 + pmid % 180
    completed = entrez + timedelta(days=30)
    pubmed = entrez + timedelta(days=1)
    condition = "ME/CFS" if on_topic else "chronic low back pain"
    values = {
        "pmid": str(pmid), "issn": "1479-5876", "volume": str(10 + pmid % 20), "issue": str(1 + pmid % 12),
        "issue_id": f"{pmid % 1000:03d}", "journal": "Journal of Translational Medicine", "journal_abbrev": "J Transl Med",
        "title": escape(f"{title} ({pmid % 97 + 1})."),
        "background": escape(f"People with {condition} report symptoms that limit daily activity; objective measures are scarce."),
        "methods": escape(f"We enrolled {participants} adults meeting the Canadian Consensus Criteria and {participants // 2} controls."),
        "results": escape(f"Outcomes differed between groups at 24 hours (p = 0.0{pmid % 9 + 1})."),
        "conclusions": escape("These findings need replication in larger, controlled samples."),
        "last1": first[0], "fore1": first[1], "init1": first[2], "last2": second[0], "fore2": second[1], "init2": second[2],
        "extra_type": '<PublicationType UI="D016449">Randomized Controlled Trial</PublicationType>' if pmid % 5 == 0 else "",
        "mesh": escape(mesh), "mesh_ui": mesh_ui, "keyword": escape(keyword),
        "page": str(100 + pmid % 400), "end_page": str(110 + pmid % 400),
        "ey": f"{entrez.year:04d}", "em": f"{entrez.month:02d}", "ed": f"{entrez.day:02d}",
        "em_short": str(entrez.month), "ed_short": str(entrez.day), "month_name": _MONTHS[entrez.month - 1],
        "py": f"{pubmed.year:04d}", "pm": str(pubmed.month), "pd": str(pubmed.day),
        "cy": f"{completed.year:04d}", "cm": f"{completed.month:02d}", "cd": f"{completed.day:02d}",
        "ry": f"{revised.year:04d}", "rm": f"{revised.month:02d}", "rd": f"{revised.day:02d}",
    }
    return _ARTICLE.substitute(values).encode("utf-8")


def write_synthetic_corpus(
    directory: Path | str,
    count: int,
    *,
    first_pmid: int = 39_000_001,
    start: date = date(2024, 1, 1),
    days: int = 365,
    per_file: int = 1000,
    revised_every: int = 10,
    revised_after_days: int = 200,
    off_topic_every: int = 0,
) -> list[str]:
    """Write ``count`` synthetic PubMed records into ``directory`` as PubmedArticleSet files.

    Entrez dates are spread evenly over ``days`` from ``start``; every
    ``revised_every``-th record gets a DateRevised ``revised_after_days``
    later (for mdat passes), the others are revised 30 days after entry;
    every ``off_topic_every``-th record (0: none) does not match the ME/CFS
    query. Returns the PMIDs written.
    """
    if count < 0 or per_file < 1 or days < 1:
        raise ValueError("count must be >= 0, per_file and days >= 1")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    pmids: list[str] = []
    chunk: list[bytes] = []
    file_number = 0

    def flush() -> None:
        nonlocal file_number, chunk
        if chunk:
            path = folder / f"synthetic_{file_number:04d}.xml"
            path.write_bytes(EFETCH_HEAD + b"<PubmedArticleSet>\n" + b"\n".join(chunk) + b"\n</PubmedArticleSet>\n")
            file_number += 1
            chunk = []

    for index in range(count):
        pmid = first_pmid + index
        entrez = start + timedelta(days=(index * days) // max(count, 1))
        late = revised_every and index % revised_every == revised_every - 1
        revised = entrez + timedelta(days=revised_after_days if late else 30)
        on_topic = not (off_topic_every and index % off_topic_every == off_topic_every - 1)
        chunk.append(synthetic_article(pmid, entrez, revised, on_topic=on_topic))
        pmids.append(str(pmid))
        if len(chunk) >= per_file:
            flush()
    flush()
    return pmids


# ---------------------------------------------------------------- command line


def serve(corpus_dir: Path | str, port: int, rate_limit: float, *, ready: Callable[[str], None] | None = None,
          stop: threading.Event | None = None) -> None:
    """Serve ``corpus_dir`` on 127.0.0.1:``port`` until interrupted (or ``stop`` is set)."""
    fake = FakeEutils(corpus_dir, port=port, rate_limit=rate_limit)
    with fake:
        message = f"fake E-utilities serving {len(fake.pmids())} records from {corpus_dir} at {fake.url}"
        (ready or print)(message)
        waiter = stop or threading.Event()
        try:
            while not waiter.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fake-eutils", description="Loopback fake NCBI E-utilities.")
    parser.add_argument("--corpus", type=Path, required=True, help="folder of PubMed XML files")
    parser.add_argument("--port", type=int, default=8765, help="loopback port (0 picks a free one)")
    parser.add_argument("--rate-limit", type=float, default=3.0, help="requests per second before 429")
    parser.add_argument("--synthetic", type=int, default=0, help="first write this many synthetic records into --corpus")
    args = parser.parse_args(argv)
    if args.synthetic:
        write_synthetic_corpus(args.corpus, args.synthetic)
    if not args.corpus.is_dir():
        parser.error(f"{args.corpus}: not a folder")
    serve(args.corpus, args.port, args.rate_limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
