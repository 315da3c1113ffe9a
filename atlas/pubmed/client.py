"""NCBI E-utilities over httpx: the only module that talks to NCBI.

Every request is a form POST. That keeps ``api_key`` out of URLs, so it never
lands in httpx's request log, an access log or an exception message; NCBI
reads POST parameters exactly like query parameters.

What counts as a failure is decided by pure functions (``check_response``,
``parse_esearch``) so they can be tested against real NCBI bodies: a 429, a
5xx, a timeout, an HTML page, a JSON error body, an in-band ``<ERROR>`` and
XML that does not parse completely are all ``ServiceError``, never turned
into an empty result. Only the transient ones (429, 5xx, timeouts, dropped
connections, bodies cut short) are retried with backoff; an HTML page, an
in-band error, a JSON error or the wrong document is raised at once. Any
other 4xx is ``BadRequest`` (not retried). One in-band error is bad input
rather than a hiccup: NCBI's "'retstart' cannot be larger than 9998" is a
``BadRequest``, since retrying cannot help (the client splits windows so it
never asks for it).
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urlencode

import httpx
from lxml import etree
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from atlas.config import Settings
from atlas.errors import BadRequest, RateLimited, RecordError, ServiceError
from atlas.ratelimit import RateLimiter

log = logging.getLogger(__name__)

#: PubMed ESearch returns at most this many ids per query (``retstart`` <= 9,998).
ESEARCH_CAP = 9_999
DATETYPES = ("edat", "mdat", "pdat")
PUBMED_ROOTS = ("PubmedArticleSet",)
PMC_ROOTS = ("pmc-articleset",)
ESEARCH_ROOTS = ("eSearchResult",)
_RETSTART_CAP_MESSAGE = re.compile(r"retstart'? cannot be larger than|out of acceptable range", re.I)
_HTML_START = re.compile(rb"^\s*(<!doctype\s+html|<html)", re.I)
_PMID = re.compile(r"^[0-9]{1,9}$")
_PMCID = re.compile(r"^(?:PMC)?([0-9]{1,9})$", re.I)


class WindowTooLarge(BadRequest):
    """One day of the query matches more records than ESearch can return.

    Splitting stops at a single day; ``usehistory`` does not lift PubMed's
    9,999 cap, so the honest answer is to narrow the query (or load PubMed's
    baseline/update files for a full mirror).
    """


class FullTextUnavailable(RecordError):
    """PMC has no XML full text for this id (not open access or unknown)."""


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One ESearch reply: the total ``count`` and the ids of this page."""

    count: int
    retstart: int
    ids: list[str]


# ---------------------------------------------------------------- pure helpers


def ncbi_date(day: date) -> str:
    """Dates as E-utilities expect them: YYYY/MM/DD."""
    return day.strftime("%Y/%m/%d")


def redact(text: str, secrets: Sequence[str]) -> str:
    """Replace every secret value in ``text`` so it can go into a message or a log."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _collapse(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reason_from_body(body: bytes) -> str:
    """A short human reason from an error body: JSON ``error``, an ``<ERROR>``, an HTML title, or the start."""
    text = body.decode("utf-8", "replace")
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key in ("error", "ERROR", "message"):
                if data.get(key):
                    return _collapse(str(data[key]))
            nested = data.get("esearchresult")
            if isinstance(nested, dict) and nested.get("ERROR"):
                return _collapse(str(nested["ERROR"]))
    for pattern in (r"<ERROR>(.*?)</ERROR>", r"<title[^>]*>(.*?)</title>", r"<h1[^>]*>(.*?)</h1>"):
        match = re.search(pattern, text, re.I | re.S)
        if match and match.group(1).strip():
            return _collapse(re.sub(r"<[^>]+>", " ", match.group(1)))
    return _collapse(re.sub(r"<[^>]+>", " ", text)) or "(empty body)"


def _xml_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)


def check_response(
    status: int,
    body: bytes,
    *,
    where: str,
    expected_roots: Sequence[str],
    content_type: str = "",
    reason: str = "",
    retry_after: str | None = None,
    secrets: Sequence[str] = (),
) -> etree._Element:
    """Return the parsed root of a good E-utilities reply, or raise the error it really is.

    ``where`` describes the request for messages and must already be free of
    secrets; text taken from the body is redacted with ``secrets``.
    """

    def reason_text() -> str:
        return redact(_reason_from_body(body), secrets)

    status_text = f"HTTP {status}{' ' + reason if reason else ''}"
    if status == 429:
        wait = parse_retry_after(retry_after)
        raise RateLimited(
            f"NCBI rate limit exceeded ({status_text}: {reason_text()}) for {where}",
            status=status,
            retry_after=wait,
        )
    if status >= 500:
        raise ServiceError(f"NCBI server error ({status_text}: {reason_text()}) for {where}", status=status)
    if 300 <= status < 400:
        raise BadRequest(f"NCBI answered {status_text} (a redirect) for {where}; check ATLAS_EUTILS_URL")
    if status >= 400:
        raise BadRequest(f"NCBI rejected the request ({status_text}: {reason_text()}) for {where}")
    if status != 200:
        raise ServiceError(f"NCBI answered {status_text} with no usable body for {where}", status=status,
                           transient=False)
    if not body.strip():
        raise ServiceError(f"NCBI sent an empty body (HTTP 200) for {where}", status=status)
    if "html" in content_type.lower() or _HTML_START.match(body[:512]):
        raise ServiceError(f"NCBI sent an HTML page instead of XML ({reason_text()}) for {where}", status=status,
                           transient=False)
    if body.lstrip()[:1] in (b"{", b"["):
        said = reason_text()
        if "rate limit" in said.lower():  # NCBI's 429 body, whatever the status: wait and ask again
            raise RateLimited(f"NCBI rate limit exceeded ({status_text}: {said}) for {where}",
                              status=status, retry_after=parse_retry_after(retry_after))
        raise ServiceError(f"NCBI sent a JSON error instead of XML ({said}) for {where}", status=status,
                           transient=False)
    try:
        root = etree.fromstring(body, parser=_xml_parser())
    except etree.XMLSyntaxError as exc:
        raise ServiceError(
            f"NCBI sent XML that does not parse completely (truncated?): {redact(str(exc), secrets)}; "
            f"{len(body)} bytes for {where}",
            status=status,
        ) from None
    errors = [redact(_collapse("".join(el.itertext())), secrets) for el in root.findall("ERROR")]
    errors = [text for text in errors if text]
    if errors:
        joined = " | ".join(errors)
        if any(_RETSTART_CAP_MESSAGE.search(text) for text in errors):
            raise BadRequest(f"NCBI refused to page past its ESearch cap: {joined} ({where})")
        raise ServiceError(f"NCBI reported an error in-band: {joined} ({where})", status=status, transient=False)
    if root.tag not in expected_roots:
        raise ServiceError(
            f"NCBI sent <{root.tag}> where <{'> or <'.join(expected_roots)}> was expected for {where}",
            status=status,
            transient=False,
        )
    return root


def parse_esearch(root: etree._Element) -> SearchPage:
    """Count, RetStart and ids of an eSearchResult (an ErrorList/PhraseNotFound is just zero results)."""

    def integer(tag: str) -> int:
        text = root.findtext(tag)
        if text is None or not text.strip().isdigit():
            raise ServiceError(f"eSearchResult has no usable <{tag}> (got {text!r})")
        return int(text.strip())

    ids = [(el.text or "").strip() for el in root.iterfind("IdList/Id")]
    return SearchPage(count=integer("Count"), retstart=integer("RetStart"), ids=[i for i in ids if i])


def _is_transient(error: BaseException) -> bool:
    """Worth asking again: a 429, a 5xx, a timeout, a dropped connection or a body cut short."""
    return isinstance(error, ServiceError) and error.transient


def _pmid_sort_key(pmid: str) -> tuple[int, str]:
    return (int(pmid), pmid) if pmid.isdigit() else (1 << 62, pmid)


# ---------------------------------------------------------------- the client


class EutilsClient:
    """ESearch and EFetch with NCBI's etiquette: one shared pace, identity on every request, careful retries.

    ``limiter`` may be shared with other clients that count against the same
    NCBI allowance. ``retry_wait_base``/``retry_wait_max`` shape the
    exponential backoff (tests make them tiny), ``retry_after_max`` caps how
    long a Retry-After header can hold us, and ``search_cap``/``page_size``
    exist so tests can exercise window splitting and paging on small corpora.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        limiter: RateLimiter | None = None,
        transport: httpx.BaseTransport | None = None,
        retry_wait_base: float | None = None,
        retry_wait_max: float = 60.0,
        retry_after_max: float = 120.0,
        search_cap: int = ESEARCH_CAP,
        page_size: int | None = None,
    ):
        if search_cap < 1:
            raise ValueError("search_cap must be >= 1")
        self.settings = settings
        self.limiter = limiter if limiter is not None else RateLimiter(settings.rate_limit)
        self.max_retries = settings.max_retries
        self.retry_wait_base = settings.retry_wait_base if retry_wait_base is None else retry_wait_base
        self.retry_wait_max = retry_wait_max
        self.retry_after_max = retry_after_max
        self.search_cap = search_cap
        self.page_size = min(page_size or search_cap, search_cap)
        self._base_url = settings.eutils_url
        self._api_key = settings.ncbi_api_key.get_secret_value() if settings.ncbi_api_key else None
        self._identity = {"tool": settings.ncbi_tool}
        if settings.ncbi_email:
            self._identity["email"] = settings.ncbi_email
        if self._api_key:
            self._identity["api_key"] = self._api_key
        if not settings.ncbi_email:
            log.warning("ATLAS_NCBI_EMAIL is not set: NCBI asks every tool to send a contact email with its requests")
        self._http = httpx.Client(
            base_url=self._base_url,
            timeout=httpx.Timeout(settings.http_timeout),
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": f"{settings.ncbi_tool} (httpx)"},
        )
        self._counter_lock = threading.Lock()
        self.requests_made = 0
        self.retries = 0
        self.rate_limited = 0

    # -- lifecycle

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EutilsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        """Requests sent, retried and answered 429 so far (for the run report)."""
        with self._counter_lock:
            return {
                "requests": self.requests_made,
                "retries": self.retries,
                "rate_limited": self.rate_limited,
            }

    # -- ESearch

    def esearch_page(
        self, term: str, *, datetype: str, mindate: date, maxdate: date, retstart: int = 0, retmax: int | None = None
    ) -> SearchPage:
        """One ESearch request over an inclusive date window."""
        if datetype not in DATETYPES:
            raise ValueError(f"datetype must be one of {DATETYPES}, got {datetype!r}")
        if mindate > maxdate:
            raise ValueError(f"mindate {mindate} is after maxdate {maxdate}")
        params = {
            "db": "pubmed",
            "term": term,
            "datetype": datetype,
            "mindate": ncbi_date(mindate),
            "maxdate": ncbi_date(maxdate),
            "retstart": str(retstart),
            "retmax": str(self.page_size if retmax is None else retmax),
            "retmode": "xml",
        }
        root, _ = self._call("esearch.fcgi", params, ESEARCH_ROOTS)
        return parse_esearch(root)

    def esearch_ids(self, term: str, *, datetype: str, mindate: date, maxdate: date) -> list[str]:
        """Every PMID matching ``term`` in the window, sorted and de-duplicated.

        A window over ``search_cap`` hits is split in halves until each part
        fits; a single day that still does not fit raises ``WindowTooLarge``.
        """
        found: set[str] = set()
        self._collect(term, datetype, mindate, maxdate, found)
        return sorted(found, key=_pmid_sort_key)

    def _collect(self, term: str, datetype: str, lo: date, hi: date, found: set[str]) -> None:
        first = self.esearch_page(term, datetype=datetype, mindate=lo, maxdate=hi, retstart=0)
        if first.count > self.search_cap:
            if lo >= hi:
                raise WindowTooLarge(
                    f"{term!r} matches {first.count} records with {datetype} {ncbi_date(lo)}, more than the "
                    f"{self.search_cap} ESearch can return even for a single day; narrow the query or load "
                    "PubMed's baseline files"
                )
            middle = lo + timedelta(days=(hi - lo).days // 2)
            log.info("ESearch window %s..%s has %d hits; splitting", ncbi_date(lo), ncbi_date(hi), first.count)
            self._collect(term, datetype, lo, middle, found)
            self._collect(term, datetype, middle + timedelta(days=1), hi, found)
            return
        window_ids = list(first.ids)
        retstart = len(first.ids)
        while retstart < first.count:
            page = self.esearch_page(
                term,
                datetype=datetype,
                mindate=lo,
                maxdate=hi,
                retstart=retstart,
                retmax=min(self.page_size, self.search_cap - retstart),
            )
            if not page.ids:
                break
            window_ids.extend(page.ids)
            retstart += len(page.ids)
        if len(set(window_ids)) < first.count:
            log.warning(
                "ESearch window %s..%s (%s) returned %d distinct ids for a count of %d; the index moved while "
                "paging, the next run's overlap will pick up the rest",
                ncbi_date(lo),
                ncbi_date(hi),
                datetype,
                len(set(window_ids)),
                first.count,
            )
        found.update(window_ids)

    # -- EFetch

    def efetch_pubmed(self, pmids: Sequence[str]) -> bytes:
        """PubMed XML for these PMIDs (one POST); the body is checked to parse completely."""
        ids = [str(p).strip() for p in pmids]
        if not ids:
            raise ValueError("efetch_pubmed needs at least one PMID")
        bad = [p for p in ids if not _PMID.match(p)]
        if bad:
            raise ValueError(f"not PMIDs: {', '.join(repr(p) for p in bad[:5])}")
        params = {"db": "pubmed", "retmode": "xml", "id": ",".join(ids)}
        _, body = self._call("efetch.fcgi", params, PUBMED_ROOTS)
        return body

    def iter_efetch_batches(self, pmids: Sequence[str], batch_size: int | None = None) -> Iterator[tuple[list[str], bytes]]:
        """Yield ``(batch, body)`` for consecutive batches of ``batch_size`` PMIDs (default: settings.batch_size)."""
        size = batch_size or self.settings.batch_size
        if size < 1:
            raise ValueError("batch_size must be >= 1")
        ids = [str(p).strip() for p in pmids]
        for start in range(0, len(ids), size):
            batch = ids[start : start + size]
            yield batch, self.efetch_pubmed(batch)

    def efetch_pmc(self, pmcid: str) -> bytes:
        """JATS full text from PMC; raises ``FullTextUnavailable`` when PMC has no XML for the id."""
        match = _PMCID.match(str(pmcid).strip())
        if not match:
            raise ValueError(f"not a PMC id: {pmcid!r}")
        number = match.group(1)
        params = {"db": "pmc", "retmode": "xml", "id": number}
        root, body = self._call("efetch.fcgi", params, PMC_ROOTS)
        if root.find("article") is None:
            notes = [_collapse("".join(el.itertext())) for el in root.iter("error")]
            notes += [el.get("error", "") for el in root.iter("Reply") if el.get("error")]
            reason = "; ".join(n for n in notes if n) or "no <article> in the reply"
            raise FullTextUnavailable(f"PMC{number}: {reason}")
        return body

    # -- transport and retries

    def _describe(self, endpoint: str, params: dict[str, str]) -> str:
        """The request as text for messages: no api_key, long id lists shortened."""
        shown = {"tool": self.settings.ncbi_tool, **params}
        ids = shown.get("id", "")
        if ids.count(",") >= 5:
            parts = ids.split(",")
            shown["id"] = f"{','.join(parts[:3])},…({len(parts)} ids)"
        return f"POST {self._base_url}{endpoint}?{urlencode(shown, safe='/,…()')}"

    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key,) if self._api_key else ()

    def _bump(self, name: str) -> None:
        with self._counter_lock:
            setattr(self, name, getattr(self, name) + 1)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ServiceError) and exc.retry_after is not None:
            wait = min(exc.retry_after, self.retry_after_max)
        else:
            exponential = self.retry_wait_base * 2 ** (state.attempt_number - 1)
            wait = min(self.retry_wait_max, exponential + random.uniform(0, self.retry_wait_base))
        if isinstance(exc, RateLimited):
            self.limiter.defer(wait)  # the whole client backs off, not just this call
        return wait

    def _before_retry(self, state: RetryCallState) -> None:
        self._bump("retries")
        exc = state.outcome.exception() if state.outcome else None
        sleep = state.next_action.sleep if state.next_action else 0.0
        log.warning("retry %d/%d in %.2fs: %s", state.attempt_number, self.max_retries, sleep, exc)

    def _call(self, endpoint: str, params: dict[str, str], expected_roots: Sequence[str]) -> tuple[etree._Element, bytes]:
        where = self._describe(endpoint, params)
        form = {**params, **self._identity}
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            retry=retry_if_exception(_is_transient),
            wait=self._wait,
            before_sleep=self._before_retry,
            reraise=True,
        )
        try:
            return retrying(self._attempt, endpoint, form, where, expected_roots)
        except ServiceError as exc:
            if not exc.transient:
                raise
            attempts = retrying.statistics.get("attempt_number", 1)
            raise type(exc)(
                f"{exc} [gave up after {attempts} attempt{'s' if attempts != 1 else ''}]",
                status=exc.status,
                retry_after=exc.retry_after,
            ) from None

    def _attempt(
        self, endpoint: str, form: dict[str, str], where: str, expected_roots: Sequence[str]
    ) -> tuple[etree._Element, bytes]:
        self.limiter.acquire()
        self._bump("requests_made")
        secrets = self._secrets()
        try:
            response = self._http.post(endpoint, data=form)
        except httpx.TimeoutException as exc:
            raise ServiceError(f"NCBI timed out ({type(exc).__name__}) for {where}") from None
        except httpx.TransportError as exc:
            raise ServiceError(
                f"could not reach NCBI ({type(exc).__name__}: {redact(str(exc), secrets)}) for {where}"
            ) from None
        try:
            root = check_response(
                response.status_code,
                response.content,
                where=where,
                expected_roots=expected_roots,
                content_type=response.headers.get("content-type", ""),
                reason=response.reason_phrase,
                retry_after=response.headers.get("retry-after"),
                secrets=secrets,
            )
        except RateLimited:
            self._bump("rate_limited")
            raise
        return root, response.content
