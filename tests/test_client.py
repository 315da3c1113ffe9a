"""The E-utilities client against real NCBI bodies and the loopback fake, plus the shared rate limiter."""

from __future__ import annotations

import logging
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from lxml import etree

from atlas.config import DEFAULT_QUERY, Settings
from atlas.errors import BadRequest, RateLimited, ServiceError
from atlas.fakes.eutils import FakeEutils, synthetic_article, write_synthetic_corpus
from atlas.pubmed.client import (
    ESEARCH_CAP,
    EutilsClient,
    FullTextUnavailable,
    WindowTooLarge,
    check_response,
    parse_esearch,
    parse_retry_after,
)
from atlas.ingest import Window, find_pmids, nightly_window
from atlas.ratelimit import RateLimiter

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "fake_corpus"
SECRET = "k3y-5ecret-0123456789abcdef"
FAST = 1000.0  # requests per second where the rate itself is not under test
WHERE = "POST http://127.0.0.1/entrez/eutils/esearch.fcgi?db=pubmed"


def make_settings(url: str, **overrides) -> Settings:
    values = {"eutils_url": url, "ncbi_email": "maintainer@example.org", "requests_per_second": FAST, "max_retries": 4}
    values.update(overrides)
    return Settings(**values)


def make_client(url: str, **kwargs) -> EutilsClient:
    settings_overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in Settings.model_fields}
    kwargs.setdefault("retry_wait_base", 0.001)
    kwargs.setdefault("retry_wait_max", 0.01)
    return EutilsClient(make_settings(url, **settings_overrides), **kwargs)


def pmids_in(body: bytes) -> list[str]:
    root = etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    assert root.tag == "PubmedArticleSet"
    return [el.text for el in root.iterfind("PubmedArticle/MedlineCitation/PMID")]


@pytest.fixture
def fake():
    with FakeEutils(CORPUS, rate_limit=FAST, api_key_rate_limit=FAST) as server:
        yield server


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic")
    write_synthetic_corpus(folder, 120, start=date(2024, 3, 1), days=60, revised_every=0, off_topic_every=6)
    return folder


# ---------------------------------------------------------------- pure decisions


def test_nightly_window_first_run_and_overlap():
    today = date(2025, 6, 30)
    assert nightly_window(None, today=today, overlap_days=3, first_run_days=30) == Window(date(2025, 5, 31), today)
    assert nightly_window(date(2025, 6, 20), today=today, overlap_days=3, first_run_days=30).start == date(2025, 6, 17)
    # never starts in the future
    assert nightly_window(date(2025, 7, 10), today=today, overlap_days=3, first_run_days=30) == Window(today, today)


@pytest.mark.parametrize(
    ("name", "count", "first_ids"),
    [
        ("esearch_pubmed_simple_idlist.xml", 63, ["41282813", "41148224"]),
        ("esearch_pubmed_usehistory_webenv_querykey.xml", 42249, ["41297076", "41297074"]),
        ("esearch_pubmed_retstart_translationset.xml", 2651, ["11121077", "11121076"]),
        ("esearch_pubmed_translationstack.xml", 5, ["6540636", "5830998"]),
        ("esearch_legacy_2002_dtd_whitespace.xml", 177, ["75", "138"]),
    ],
)
def test_real_esearch_replies_parse(name, count, first_ids):
    body = (FIXTURES / "esearch" / name).read_bytes()
    page = parse_esearch(check_response(200, body, where=WHERE, expected_roots=("eSearchResult",)))
    assert page.count == count
    assert page.ids[:2] == first_ids


def test_phrase_not_found_is_zero_results_not_an_error():
    body = (FIXTURES / "esearch" / "esearch_pubmed_no_results_errorlist_phrasenotfound_warninglist.xml").read_bytes()
    page = parse_esearch(check_response(200, body, where=WHERE, expected_roots=("eSearchResult",)))
    assert (page.count, page.ids) == (0, [])


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("epost_ERROR_invalid_db.xml", "Invalid db name specified: nothing"),
        ("epost_two_ERROR_elements.xml", "Empty ID list; Nothing to store | Some IDs have invalid value"),
        ("esummary_ERROR_no_id.xml", "Neither query_key nor id specified"),
    ],
)
def test_real_error_documents_are_service_errors(name, text):
    body = (FIXTURES / "eutils_errors" / name).read_bytes()
    with pytest.raises(ServiceError, match="in-band") as caught:
        check_response(200, body, where=WHERE, expected_roots=("eSearchResult",))
    assert text in str(caught.value)


def test_an_empty_error_element_is_not_an_error():
    body = (FIXTURES / "eutils_errors" / "espell_empty_ERROR_element.xml").read_bytes()
    assert check_response(200, body, where=WHERE, expected_roots=("eSpellResult",)).tag == "eSpellResult"


def test_rate_limit_json_bodies():
    documented = (FIXTURES / "json" / "rate_limit_exceeded_documented_example.json").read_bytes()
    with pytest.raises(RateLimited, match="API rate limit exceeded") as caught:
        check_response(429, documented, where=WHERE, expected_roots=("eSearchResult",), retry_after="2")
    assert caught.value.status == 429 and caught.value.retry_after == 2.0
    observed = (FIXTURES / "json" / "rate_limit_exceeded_observed_ip_redacted.json").read_bytes()
    with pytest.raises(RateLimited, match="rate limit exceeded.*HTTP 200.*API rate limit exceeded"):
        check_response(200, observed, where=WHERE, expected_roots=("eSearchResult",))  # the 429 body on a 200
    with pytest.raises(ServiceError, match="JSON error instead of XML.*Invalid db") as caught:
        check_response(200, b'{"error": "Invalid db name specified"}', where=WHERE, expected_roots=("eSearchResult",))
    assert not caught.value.transient


def test_html_truncated_and_wrong_documents_are_service_errors():
    """Only a body cut short is worth asking again for; the other answers were given on purpose."""
    html = b"<!DOCTYPE html><html><head><title>NCBI - WWW Error 500 Diagnostic</title></head></html>"
    with pytest.raises(ServiceError, match="HTML page.*WWW Error 500") as caught:
        check_response(200, html, where=WHERE, expected_roots=("eSearchResult",))
    assert not caught.value.transient
    with pytest.raises(ServiceError, match="HTML") as caught:
        check_response(200, b"<p>oops</p>", where=WHERE, expected_roots=("x",), content_type="text/html")
    assert not caught.value.transient
    record = (CORPUS / "pubmed_23435529_rct_structured_collectivename.xml").read_bytes()
    assert check_response(200, record, where=WHERE, expected_roots=("PubmedArticleSet",)).tag == "PubmedArticleSet"
    with pytest.raises(ServiceError, match="does not parse completely") as caught:
        check_response(200, record[: len(record) // 2], where=WHERE, expected_roots=("PubmedArticleSet",))
    assert caught.value.transient
    with pytest.raises(ServiceError, match="empty body") as caught:
        check_response(200, b"  \n", where=WHERE, expected_roots=("PubmedArticleSet",))
    assert caught.value.transient
    esearch = (FIXTURES / "esearch" / "esearch_pubmed_simple_idlist.xml").read_bytes()
    with pytest.raises(ServiceError, match="<eSearchResult> where <PubmedArticleSet>") as caught:
        check_response(200, esearch, where=WHERE, expected_roots=("PubmedArticleSet",))
    assert not caught.value.transient
    with pytest.raises(ServiceError, match="in-band: Empty term") as caught:
        check_response(200, b"<eSearchResult><ERROR>Empty term and query_key - nothing todo</ERROR></eSearchResult>",
                       where=WHERE, expected_roots=("eSearchResult",))
    assert not caught.value.transient
    for status in (500, 502, 503):
        with pytest.raises(ServiceError) as caught:
            check_response(status, html, where=WHERE, expected_roots=("eSearchResult",))
        assert caught.value.transient


def test_status_codes_split_retryable_from_bad_requests():
    with pytest.raises(ServiceError) as server:
        check_response(503, b"busy", where=WHERE, expected_roots=("x",), reason="Service Unavailable")
    assert not isinstance(server.value, BadRequest) and server.value.status == 503
    with pytest.raises(BadRequest, match="HTTP 414 URI Too Long"):
        check_response(414, b"", where=WHERE, expected_roots=("x",), reason="URI Too Long")
    with pytest.raises(BadRequest, match="redirect"):
        check_response(301, b"", where=WHERE, expected_roots=("x",))


def test_secrets_are_redacted_from_body_text():
    body = b'{"error":"API key invalid","api-key":"' + SECRET.encode() + b'","type":"invalid"}'
    with pytest.raises(BadRequest) as caught:
        check_response(400, body, where=WHERE, expected_roots=("x",), secrets=(SECRET,))
    assert SECRET not in str(caught.value) and "API key invalid" in str(caught.value)


def test_retry_after_header_forms():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait


# ---------------------------------------------------------------- against the fake


def test_search_and_fetch_roundtrip(fake):
    with make_client(fake.url) as client:
        pmids = client.esearch_ids('"back pain"[tiab] OR tuberculosis', datetype="edat",
                                   mindate=date(1980, 1, 1), maxdate=date(2022, 12, 31))
        assert pmids == ["2930949", "11446611", "28786991", "36400559"]  # numeric order
        body = client.efetch_pubmed(pmids)
        assert sorted(pmids_in(body), key=int) == pmids
        assert b"Back Pain: Differential Diagnosis and Management." in body
        assert client.stats() == {"requests": 2, "retries": 0, "rate_limited": 0}
        assert [r.method for r in fake.requests] == ["POST", "POST"]
        batches = list(client.iter_efetch_batches(pmids, batch_size=3))
        assert [batch for batch, _ in batches] == [pmids[:3], pmids[3:]]
        assert [pmids_in(body) for _, body in batches] == [pmids[:3], pmids[3:]]


def test_default_query_over_a_synthetic_corpus(synthetic_dir):
    with FakeEutils(synthetic_dir, rate_limit=FAST) as fake, make_client(fake.url, page_size=7) as client:
        pmids = client.esearch_ids(DEFAULT_QUERY, datetype="edat", mindate=date(2024, 3, 1), maxdate=date(2024, 4, 29))
        assert len(pmids) == 100  # 120 records, every 6th off topic
        assert len(fake.requests) == 15  # pages of 7
        assert client.efetch_pubmed(pmids[:2]) and pmids == sorted(pmids, key=int)


def test_identity_on_every_request_and_key_never_leaks(fake, caplog):
    caplog.set_level(logging.DEBUG)
    fake.faults.rate_limit_storm(1, endpoint="efetch.fcgi").server_errors(1, endpoint="efetch.fcgi")
    with make_client(fake.url, ncbi_api_key=SECRET, max_retries=1) as client:
        client.esearch_ids("pain", datetype="edat", mindate=date(2000, 1, 1), maxdate=date(2024, 1, 1))
        with pytest.raises(ServiceError) as exhausted:
            client.efetch_pubmed(["23435529"])  # 429 then 503 is all it gets
        fake.api_keys = {"another-key"}
        with pytest.raises(BadRequest) as rejected:
            client.efetch_pubmed(["23435529"])  # the fake echoes the bad key in its body
    requests = fake.requests
    assert [r.status for r in requests] == [200, 429, 503, 400]
    for request in requests:
        assert request.params["tool"] == "mecfs-atlas"
        assert request.params["email"] == "maintainer@example.org"
        assert request.params["api_key"] == SECRET
    for error in (exhausted.value, rejected.value):
        assert SECRET not in str(error) and SECRET not in repr(error)
        assert "api_key" not in str(error)
        assert "efetch.fcgi" in str(error)
    assert "API key invalid" in str(rejected.value)
    assert "gave up after 2 attempts" in str(exhausted.value)
    assert caplog.records, "retries should have been logged"
    assert SECRET not in caplog.text


def test_an_api_key_raises_the_pace_to_ten_requests_a_second():
    assert (Settings().rate_limit, Settings(ncbi_api_key=SECRET).rate_limit) == (3.0, 10.0)
    assert Settings(ncbi_api_key=SECRET, requests_per_second=5).rate_limit == 5.0
    with FakeEutils(CORPUS, rate_limit=3.0, api_key_rate_limit=10.0) as server:
        settings = Settings(eutils_url=server.url, ncbi_email="maintainer@example.org", ncbi_api_key=SECRET)
        with EutilsClient(settings) as client:
            for _ in range(12):
                client.efetch_pubmed(["9997"])
        assert server.sent_429 == 0
        assert 3 < server.max_requests_in_any_second() <= 10  # faster than the keyless pace, never over NCBI's


def test_rate_limit_storm_recovers_without_losing_records(fake):
    fake.faults.rate_limit_storm(3)
    wanted = ["12091962", "9997", "23435529", "2930949"]
    with make_client(fake.url) as client:
        fetched = [pmid for _, body in client.iter_efetch_batches(wanted, batch_size=2) for pmid in pmids_in(body)]
        assert fetched == wanted
        assert client.stats() == {"requests": 5, "retries": 3, "rate_limited": 3}
    assert fake.sent_429 == 3


def test_retry_after_is_honoured(fake):
    fake.faults.rate_limit_storm(1, retry_after=0.4)
    with make_client(fake.url) as client:
        started = time.monotonic()
        assert pmids_in(client.efetch_pubmed(["9997"])) == ["9997"]
        assert time.monotonic() - started >= 0.4


def test_server_errors_recover(fake):
    fake.faults.server_errors(2, status=502).server_errors(1, status=500)
    with make_client(fake.url) as client:
        assert pmids_in(client.efetch_pubmed(["9997"])) == ["9997"]
        assert client.retries == 3
    assert [r.status for r in fake.requests] == [502, 502, 500, 200]


def test_truncated_xml_is_retried_then_succeeds(fake):
    fake.faults.truncate(2, endpoint="efetch.fcgi")
    with make_client(fake.url) as client:
        assert pmids_in(client.efetch_pubmed(["2930949", "23435529"])) == ["2930949", "23435529"]
        assert client.retries == 2


def test_persistent_truncation_raises_instead_of_returning_nothing(fake):
    fake.faults.truncate(10)
    with make_client(fake.url, max_retries=2) as client:
        with pytest.raises(ServiceError, match="does not parse completely.*gave up after 3 attempts"):
            client.efetch_pubmed(["23435529"])
        with pytest.raises(ServiceError, match="does not parse completely"):
            client.esearch_ids("pain", datetype="edat", mindate=date(2000, 1, 1), maxdate=date(2024, 1, 1))
    assert fake.request_count == 6


def test_in_band_error_raises_service_error_at_once(fake):
    fake.faults.in_band_error(10, message="Search Backend failed: timeout")
    with make_client(fake.url) as client:
        with pytest.raises(ServiceError, match="in-band: Search Backend failed: timeout") as caught:
            client.esearch_ids("pain", datetype="edat", mindate=date(2000, 1, 1), maxdate=date(2024, 1, 1))
        assert "gave up" not in str(caught.value)
        with pytest.raises(ServiceError, match="in-band"):
            client.efetch_pubmed(["9997"])
        assert client.stats() == {"requests": 2, "retries": 0, "rate_limited": 0}
    assert fake.request_count == 2


@pytest.mark.parametrize(("status", "requests"), [(200, 1), (503, 3)])
def test_html_page_raises_service_error_retried_only_as_a_5xx(fake, status, requests):
    fake.faults.html_page(10, status=status)
    with make_client(fake.url, max_retries=2) as client, pytest.raises(ServiceError) as caught:
        client.efetch_pubmed(["9997"])
    assert ("HTML page" if status == 200 else "server error") in str(caught.value)
    assert "WWW Error" in str(caught.value)
    assert fake.request_count == requests


def test_bad_request_is_not_retried(fake):
    fake.faults.reject(1, status=400, message="Invalid parameter: retmode")
    with make_client(fake.url) as client:
        with pytest.raises(BadRequest, match="HTTP 400 Bad Request: Invalid parameter: retmode"):
            client.efetch_pubmed(["9997"])
        assert client.stats() == {"requests": 1, "retries": 0, "rate_limited": 0}
    assert fake.request_count == 1


def test_timeouts_are_retried(fake):
    fake.faults.slow(1, seconds=0.6)
    with make_client(fake.url, http_timeout=0.2) as client:
        assert pmids_in(client.efetch_pubmed(["9997"])) == ["9997"]
        assert client.retries >= 1
    assert fake.requests[0].status == 200  # the fake did answer, only too late for the client


def test_unreachable_server_is_a_service_error_without_the_key():
    with FakeEutils(rate_limit=FAST) as gone:
        url = gone.url
    with make_client(url, ncbi_api_key=SECRET, max_retries=1) as client, pytest.raises(ServiceError) as caught:
        client.efetch_pubmed(["9997"])
    assert "could not reach NCBI" in str(caught.value) and SECRET not in str(caught.value)
    assert client.requests_made == 2


def test_large_window_is_split_until_each_part_fits(synthetic_dir):
    with FakeEutils(synthetic_dir, rate_limit=FAST, search_cap=25) as fake, make_client(fake.url, search_cap=25) as client:
        pmids = client.esearch_ids(DEFAULT_QUERY, datetype="edat", mindate=date(2024, 3, 1), maxdate=date(2024, 4, 29))
        searches = [r for r in fake.requests if r.endpoint == "esearch.fcgi"]
    assert len(pmids) == 100 and len(set(pmids)) == 100
    assert len(searches) > 4  # 100 hits under a cap of 25 need several windows
    assert all(int(r.params["retstart"]) + int(r.params["retmax"]) <= 25 for r in searches)
    assert all(r.status == 200 for r in searches)
    windows = {(r.params["mindate"], r.params["maxdate"]) for r in searches}
    assert ("2024/03/01", "2024/03/30") in windows and ("2024/03/31", "2024/04/29") in windows


def test_single_day_over_the_cap_is_a_clear_error(tmp_path):
    day = date(2024, 5, 5)
    articles = b"".join(synthetic_article(40_000_000 + i, day, day) for i in range(6))
    (tmp_path / "one_day.xml").write_bytes(b"<PubmedArticleSet>" + articles + b"</PubmedArticleSet>")
    with FakeEutils(tmp_path, rate_limit=FAST, search_cap=5) as fake, make_client(fake.url, search_cap=5) as client:
        with pytest.raises(WindowTooLarge, match="matches 6 records with edat 2024/05/05"):
            client.esearch_ids(DEFAULT_QUERY, datetype="edat", mindate=day - timedelta(days=3), maxdate=day)


def test_the_real_retstart_cap_is_refused_without_retrying(synthetic_dir):
    with FakeEutils(synthetic_dir, rate_limit=FAST) as fake, make_client(fake.url) as client:
        assert client.search_cap == ESEARCH_CAP == 9_999
        last = client.esearch_page(DEFAULT_QUERY, datetype="edat", mindate=date(2024, 1, 1),
                                   maxdate=date(2024, 12, 31), retstart=9_998, retmax=1)
        assert last.count == 100 and last.ids == []
        with pytest.raises(BadRequest, match="'retstart' cannot be larger than 9998"):
            client.esearch_page(DEFAULT_QUERY, datetype="edat", mindate=date(2024, 1, 1),
                                maxdate=date(2024, 12, 31), retstart=9_999, retmax=1)
    assert fake.request_count == 2


def test_mdat_pass_picks_up_revised_records(tmp_path):
    old = synthetic_article(38_000_001, date(2023, 1, 10), date(2023, 2, 1))
    new = synthetic_article(38_000_002, date(2024, 6, 3), date(2024, 6, 3))
    (tmp_path / "two.xml").write_bytes(b"<PubmedArticleSet>" + old + new + b"</PubmedArticleSet>")
    since, until = date(2024, 6, 1), date(2024, 6, 5)
    with FakeEutils(tmp_path, rate_limit=FAST) as fake, make_client(fake.url) as client:
        assert find_pmids(client, DEFAULT_QUERY, Window(since, until)) == ["38000002"]
        fake.revise("38000001", date(2024, 6, 4))
        assert client.esearch_ids(DEFAULT_QUERY, datetype="edat", mindate=since, maxdate=until) == ["38000002"]
        assert find_pmids(client, DEFAULT_QUERY, Window(since, until)) == ["38000001", "38000002"]
        datetypes = [r.params["datetype"] for r in fake.requests]
    assert datetypes == ["edat", "mdat", "edat", "edat", "mdat"]


def test_pmc_full_text_and_unavailable_ids(fake):
    with make_client(fake.url) as client:
        body = client.efetch_pmc("PMC8435807")
        assert b'article-type="correction"' in body
        with pytest.raises(FullTextUnavailable, match="PMC123: The following PMCID is not available: 123"):
            client.efetch_pmc("123")
        with pytest.raises(ValueError):
            client.efetch_pmc("doi:10.1/x")
        assert client.stats()["requests"] == 2
    assert [r.params["db"] for r in fake.requests] == ["pmc", "pmc"]


def test_bad_pmids_are_refused_before_any_request(fake):
    with make_client(fake.url) as client:
        with pytest.raises(ValueError, match="at least one"):
            client.efetch_pubmed([])
        with pytest.raises(ValueError, match="not PMIDs: '12a'"):
            client.efetch_pubmed(["123", "12a"])
    assert fake.request_count == 0


def test_client_pace_stays_under_three_per_second_at_the_fake():
    with FakeEutils(CORPUS, rate_limit=3.0) as fake:
        with EutilsClient(make_settings(fake.url, requests_per_second=None), retry_wait_base=0.01) as client:
            assert client.limiter.rate_per_second == 3.0
            started = time.monotonic()
            for _ in range(12):
                client.efetch_pubmed(["9997"])
            elapsed = time.monotonic() - started
        assert fake.sent_429 == 0 and client.rate_limited == 0
        assert fake.max_requests_in_any_second() <= 3
    assert elapsed >= 11 / 3  # never faster than the rate (throughput is measured in bench/bench_fetch.py)


# ---------------------------------------------------------------- the rate limiter itself


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_limiter_spaces_calls_evenly():
    clock = FakeClock()
    limiter = RateLimiter(4, headroom=0.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(5):
        limiter.acquire()
        starts.append(clock.now)
    assert starts == [100.0, 100.25, 100.5, 100.75, 101.0]
    clock.now += 10  # idle time does not build up a burst allowance
    limiter.acquire()
    limiter.acquire()
    assert clock.now == 111.25


def test_limiter_defer_holds_everyone_back():
    clock = FakeClock()
    limiter = RateLimiter(10, headroom=0.0, clock=clock, sleep=clock.sleep)
    limiter.acquire()
    limiter.defer(2.0)
    limiter.acquire()
    assert clock.now == 102.0


def test_limiter_is_shared_safely_between_threads():
    # A frozen clock and a no-op sleep: every caller's wait is exactly its slot's offset,
    # so concurrent callers must get distinct, evenly spaced slots.
    limiter = RateLimiter(50, headroom=0.0, clock=lambda: 100.0, sleep=lambda seconds: None)
    waits: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()
        for _ in range(25):
            wait = limiter.acquire()
            with lock:
                waits.append(wait)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert limiter.acquired == 100
    assert sorted(round(wait, 6) for wait in waits) == [round(i * 0.02, 6) for i in range(100)]


def test_limiter_rejects_nonsense():
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(3, headroom=-1)
