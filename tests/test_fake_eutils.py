"""The loopback fake E-utilities: corpus indexing, ESearch/EFetch semantics, rate limit and faults.

Driven with plain httpx so these tests check the fake itself, independent of
the client under test elsewhere.
"""

from __future__ import annotations

import gzip
import json
import threading
from datetime import date
from pathlib import Path

import httpx
import pytest
from lxml import etree

from atlas.config import DEFAULT_QUERY
from atlas.fakes.eutils import (
    FakeEutils,
    QuerySyntaxError,
    compile_term,
    load_corpus,
    main,
    parse_ncbi_date,
    retstart_cap_message,
    serve,
    synthetic_article,
    write_synthetic_corpus,
)

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "fake_corpus"


def _root(body: bytes) -> etree._Element:
    return etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False, no_network=True))


def _ids(body: bytes) -> list[str]:
    return [el.text for el in _root(body).iterfind("IdList/Id")]


def _fetched_pmids(body: bytes) -> list[str]:
    root = _root(body)
    assert root.tag == "PubmedArticleSet"
    return [el.text for el in root.iterfind("*/MedlineCitation/PMID")] + [
        el.text for el in root.iterfind("PubmedBookArticle/BookDocument/PMID")
    ]


@pytest.fixture
def fake():
    with FakeEutils(CORPUS, rate_limit=1000, api_key_rate_limit=1000) as server:
        yield server


@pytest.fixture
def http():
    with httpx.Client(timeout=10) as client:
        yield client


# ---------------------------------------------------------------- corpus index


def test_indexes_real_records_with_entrez_and_revised_dates():
    records = load_corpus(CORPUS)
    # 1 + 2 + 4 PubmedArticle records and one PubmedBookArticle, from .xml and .xml.gz files
    assert sorted(records, key=int) == sorted(
        ["23435529", "12091962", "9997", "36400559", "2930949", "11446611", "28786991", "20301577"], key=int
    )
    rct = records["23435529"]
    assert rct.entrez == date(2013, 2, 26)  # PubMedPubDate PubStatus="entrez"
    assert rct.modified == date(2017, 2, 20)  # DateRevised
    assert "carcinoma, non-small-cell lung" in rct.mesh
    book = records["20301577"]
    assert book.modified == book.entrez  # no DateRevised: falls back to the entrez date
    assert rct.xml.startswith(b"<PubmedArticle>") and rct.xml.rstrip().endswith(b"</PubmedArticle>")


def test_synthetic_corpus_spreads_dates_and_marks_revisions(tmp_path):
    pmids = write_synthetic_corpus(tmp_path, 250, per_file=100, start=date(2024, 1, 1), days=100,
                                   revised_every=5, off_topic_every=10)
    assert len(pmids) == 250 and len(set(pmids)) == 250
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "synthetic_0000.xml", "synthetic_0001.xml", "synthetic_0002.xml"
    ]
    records = load_corpus(tmp_path)
    assert set(records) == set(pmids)
    entrez = sorted(r.entrez for r in records.values())
    assert entrez[0] == date(2024, 1, 1) and entrez[-1] == date(2024, 4, 9)
    late = [r for r in records.values() if (r.modified - r.entrez).days == 200]
    assert len(late) == 50
    matching = compile_term(DEFAULT_QUERY)
    assert sum(matching(r) for r in records.values()) == 225  # every 10th record is off topic


def test_synthetic_article_is_wellformed_pubmed_xml():
    root = _root(synthetic_article(41000001, date(2025, 3, 4), date(2025, 5, 6)))
    assert root.tag == "PubmedArticle"
    assert root.findtext("MedlineCitation/PMID") == "41000001"
    assert [el.get("Label") for el in root.iterfind(".//AbstractText")] == ["BACKGROUND", "METHODS", "RESULTS", "CONCLUSIONS"]
    entrez = root.find(".//PubMedPubDate[@PubStatus='entrez']")
    assert (entrez.findtext("Year"), entrez.findtext("Month"), entrez.findtext("Day")) == ("2025", "3", "4")


# ---------------------------------------------------------------- term matching and dates


def _record_with(tmp_path: Path, title: str, abstract: str = "", mesh: str = ""):
    article = synthetic_article(40000001, date(2024, 1, 1), date(2024, 1, 1))
    root = _root(article)
    root.find(".//ArticleTitle").text = title
    for node in root.findall(".//Abstract"):
        node.getparent().remove(node)
    if abstract:
        node = etree.SubElement(root.find(".//Article"), "Abstract")
        etree.SubElement(node, "AbstractText").text = abstract
    for heading in root.iterfind(".//MeshHeading/DescriptorName"):
        heading.text = mesh or "Humans"
    for keyword in root.iterfind(".//Keyword"):
        keyword.text = "none"
    path = tmp_path / "one.xml"
    path.write_bytes(b"<PubmedArticleSet>" + etree.tostring(root) + b"</PubmedArticleSet>")
    return load_corpus(tmp_path)["40000001"]


def test_term_fields_phrases_and_boolean_operators(tmp_path):
    record = _record_with(tmp_path, "Exercise in Chronic Fatigue Syndrome", "We studied ME/CFS patients.",
                          mesh="Fatigue Syndrome, Chronic")
    assert compile_term(DEFAULT_QUERY)(record)
    assert compile_term('"chronic fatigue syndrome"[ti]')(record)
    assert not compile_term('"chronic fatigue syndrome"[ab]')(record)
    assert compile_term('"ME/CFS"[tiab]')(record)
    assert compile_term('"fatigue syndrome, chronic"[mh]')(record)
    assert not compile_term('"exercise"[mh]')(record)
    assert compile_term('exercise AND "me/cfs"[tiab]')(record)
    assert not compile_term('exercise NOT "me/cfs"[tiab]')(record)
    assert compile_term('(cancer OR exercise) AND syndrome')(record)
    # PubMed applies operators left to right: (cancer AND exercise) OR syndrome
    assert compile_term("cancer AND exercise OR syndrome")(record)
    assert not compile_term("cancer AND (exercise OR syndrome)")(record)
    assert compile_term("exercise studied")(record)  # adjacent terms are ANDed


def test_term_syntax_errors_are_named():
    with pytest.raises(QuerySyntaxError, match="parentheses"):
        compile_term('("chronic fatigue"[tiab] OR cfs')
    with pytest.raises(QuerySyntaxError):
        compile_term("fatigue AND")


def test_ncbi_dates_accept_year_month_and_day():
    assert parse_ncbi_date("2024", end=False) == date(2024, 1, 1)
    assert parse_ncbi_date("2024", end=True) == date(2024, 12, 31)
    assert parse_ncbi_date("2024/02", end=True) == date(2024, 2, 29)
    assert parse_ncbi_date("2024/12", end=True) == date(2024, 12, 31)
    assert parse_ncbi_date("2024/03/05", end=False) == date(2024, 3, 5)
    with pytest.raises(ValueError):
        parse_ncbi_date("last week", end=False)


# ---------------------------------------------------------------- ESearch


def test_esearch_get_and_post_filter_by_term_and_edat(fake, http):
    params = {"db": "pubmed", "term": '"back pain"[tiab]', "datetype": "edat", "mindate": "1985", "maxdate": "2022/12/31"}
    by_get = http.get(fake.url + "esearch.fcgi", params=params)
    by_post = http.post(fake.url + "esearch.fcgi", data=params)
    assert by_get.status_code == by_post.status_code == 200
    assert by_get.content == by_post.content
    root = _root(by_get.content)
    assert root.tag == "eSearchResult"
    assert root.findtext("Count") == "3"
    assert _ids(by_get.content) == ["36400559", "11446611", "2930949"]  # most recent entrez date first
    assert root.findtext("QueryTranslation") == '"back pain"[tiab]'
    narrowed = http.post(fake.url + "esearch.fcgi", data={**params, "mindate": "2001/07/12", "maxdate": "2001/07/12"})
    assert _ids(narrowed.content) == ["11446611"]


def test_esearch_mdat_uses_the_revision_date(fake, http):
    params = {"db": "pubmed", "term": "trial", "datetype": "mdat", "mindate": "2017/02/20", "maxdate": "2017/02/20"}
    assert _ids(http.post(fake.url + "esearch.fcgi", data=params).content) == ["23435529"]
    params["datetype"] = "edat"
    assert _ids(http.post(fake.url + "esearch.fcgi", data=params).content) == []
    fake.revise("36400559", date(2025, 1, 15))
    params = {**params, "term": "pain", "datetype": "mdat", "mindate": "2025/01/15", "maxdate": "2025/01/15"}
    assert _ids(http.post(fake.url + "esearch.fcgi", data=params).content) == ["36400559"]
    assert b"<DateRevised><Year>2025</Year><Month>01</Month><Day>15</Day></DateRevised>" in fake.record("36400559").xml


def test_esearch_zero_hits_looks_like_ncbi(fake, http):
    reply = http.post(fake.url + "esearch.fcgi", data={"db": "pubmed", "term": "zebrafish"})
    root = _root(reply.content)
    assert root.findtext("Count") == "0"
    assert root.find("IdList") is not None and len(root.find("IdList")) == 0
    assert root.findtext("WarningList/OutputMessage") == "No items found."
    assert root.find("ERROR") is None


def test_esearch_json_mode(fake, http):
    reply = http.get(fake.url + "esearch.fcgi", params={"db": "pubmed", "term": "pain", "retmode": "json", "retmax": "2"})
    data = reply.json()
    assert data["header"]["type"] == "esearch"
    assert data["esearchresult"]["count"] == "3" and len(data["esearchresult"]["idlist"]) == 2


def test_esearch_cap_mirrors_pubmed(tmp_path, http):
    write_synthetic_corpus(tmp_path, 30)
    with FakeEutils(tmp_path, rate_limit=1000, search_cap=10) as small:
        paged = http.post(small.url + "esearch.fcgi", data={"db": "pubmed", "term": "fatigue", "retstart": "5", "retmax": "20"})
        root = _root(paged.content)
        assert root.findtext("Count") == "30"
        assert len(_ids(paged.content)) == 5  # clamped at the cap, as PubMed does
        assert "Restrictions achieved" in root.findtext("WarningList/OutputMessage")
        over = http.post(small.url + "esearch.fcgi", data={"db": "pubmed", "term": "fatigue", "retstart": "10"})
        assert over.status_code == 200
        assert _root(over.content).findtext("ERROR") == retstart_cap_message(10)
    with FakeEutils(tmp_path, rate_limit=1000) as real_cap:
        over = http.post(real_cap.url + "esearch.fcgi", data={"db": "pubmed", "term": "fatigue", "retstart": "9999"})
        message = _root(over.content).findtext("ERROR")
        assert "'retstart' cannot be larger than 9998" in message
        assert "can only retrieve the first 9,999 records" in message
        last = http.post(real_cap.url + "esearch.fcgi", data={"db": "pubmed", "term": "fatigue", "retstart": "9998"})
        assert _root(last.content).find("ERROR") is None


# ---------------------------------------------------------------- EFetch


def test_efetch_returns_requested_records_in_order_and_omits_unknown(fake, http):
    reply = http.post(fake.url + "efetch.fcgi", data={"db": "pubmed", "retmode": "xml", "id": "2930949,99999999,23435529,20301577"})
    assert reply.status_code == 200
    root = _root(reply.content)
    assert [child.tag for child in root] == ["PubmedArticle", "PubmedArticle", "PubmedBookArticle"]
    assert _fetched_pmids(reply.content)[:2] == ["2930949", "23435529"]
    original = _root(gzip.decompress((CORPUS / "pubmed_2024dtd_four_records_one_without_abstract.xml.gz").read_bytes()))
    served = root[0]
    assert etree.tostring(served, with_tail=False) == etree.tostring(original[1], with_tail=False)  # the record travels unchanged


def test_efetch_get_with_repeated_ids_and_empty_request(fake, http):
    reply = http.get(fake.url + "efetch.fcgi", params=[("db", "pubmed"), ("id", "9997"), ("id", "12091962")])
    assert _fetched_pmids(reply.content) == ["9997", "12091962"]
    empty = http.post(fake.url + "efetch.fcgi", data={"db": "pubmed"})
    assert empty.status_code == 400 and b"Empty id list" in empty.content


def test_efetch_pmc_serves_jats_or_ncbi_error(fake, http):
    found = http.post(fake.url + "efetch.fcgi", data={"db": "pmc", "id": "PMC8435807"})
    root = _root(found.content)
    assert root.tag == "pmc-articleset" and root[0].tag == "article"
    assert root.find("article//article-id[@pub-id-type='pmc']").text == "8435807"
    missing = http.post(fake.url + "efetch.fcgi", data={"db": "pmc", "id": "123"})
    error = _root(missing.content).find("error")
    assert error.get("id") == "123" and error.text == "The following PMCID is not available: 123"


# ---------------------------------------------------------------- rate limit


def test_rate_limit_429_body_and_per_key_windows(tmp_path, http):
    with FakeEutils(CORPUS, rate_limit=3, api_key_rate_limit=5) as fake:
        data = {"db": "pubmed", "term": "pain"}
        statuses = [http.post(fake.url + "esearch.fcgi", data=data).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        limited = http.post(fake.url + "esearch.fcgi", data=data)
        assert limited.status_code == 429
        body = limited.json()
        assert body["error"] == "API rate limit exceeded" and body["limit"] == "3"
        assert set(body) <= set(json.loads((FIXTURES / "json" / "rate_limit_exceeded_observed_ip_redacted.json").read_text()))
        keyed = [http.post(fake.url + "esearch.fcgi", data={**data, "api_key": "k1"}).status_code for _ in range(6)]
        assert keyed == [200] * 5 + [429]  # a key has its own, larger window
        assert fake.sent_429 == 4 and fake.request_count == 12


def test_api_key_allowlist_rejects_unknown_keys(http):
    with FakeEutils(CORPUS, rate_limit=1000, api_key_rate_limit=1000, api_keys={"good"}) as fake:
        bad = http.post(fake.url + "esearch.fcgi", data={"db": "pubmed", "term": "pain", "api_key": "nope"})
        assert bad.status_code == 400 and bad.json()["error"] == "API key invalid"
        good = http.post(fake.url + "esearch.fcgi", data={"db": "pubmed", "term": "pain", "api_key": "good"})
        assert good.status_code == 200


# ---------------------------------------------------------------- faults


def test_each_fault_applies_once_in_order(fake, http):
    data = {"db": "pubmed", "term": "pain"}
    fake.faults.server_errors(1, status=502).html_page(1).in_band_error(1, message="Backend down")
    fake.faults.truncate(1).rate_limit_storm(1, retry_after=2).reject(1, status=414, message="URI too long")
    replies = [http.post(fake.url + "esearch.fcgi", data=data) for _ in range(7)]
    assert [r.status_code for r in replies] == [502, 200, 200, 200, 429, 414, 200]
    assert replies[0].headers["content-type"].startswith("text/html")
    assert replies[1].content.lstrip().lower().startswith(b"<!doctype html")
    assert _root(replies[2].content).findtext("ERROR") == "Backend down"
    with pytest.raises(etree.XMLSyntaxError):
        _root(replies[3].content)
    assert replies[4].headers["retry-after"] == "2"
    assert replies[5].json() == {"error": "URI too long"}
    assert _root(replies[6].content).findtext("Count") == "3"
    assert fake.faults.pending() == 0
    assert fake.sent_429 == 1


def test_fault_limited_to_one_endpoint_waits_for_it(fake, http):
    fake.faults.truncate(1, endpoint="efetch.fcgi")
    search = http.post(fake.url + "esearch.fcgi", data={"db": "pubmed", "term": "pain"})
    assert _root(search.content).tag == "eSearchResult"
    assert fake.faults.pending() == 1
    fetch = http.post(fake.url + "efetch.fcgi", data={"db": "pubmed", "id": "23435529"})
    assert fetch.status_code == 200 and b"</PubmedArticleSet>" not in fetch.content
    assert b"<PubmedArticle>" in fetch.content  # cut inside the record


def test_slow_fault_delays_the_reply(fake, http):
    fake.faults.slow(1, seconds=0.4)
    with pytest.raises(httpx.ReadTimeout):
        http.post(fake.url + "esearch.fcgi", data={"db": "pubmed", "term": "pain"}, timeout=0.1)
    ok = http.post(fake.url + "esearch.fcgi", data={"db": "pubmed", "term": "pain"})
    assert ok.status_code == 200


def test_requests_are_recorded_with_their_parameters(fake, http):
    http.post(fake.url + "esearch.fcgi", data={"db": "pubmed", "term": "pain", "tool": "t", "email": "e@x", "api_key": "k"})
    http.get(fake.url + "efetch.fcgi", params={"db": "pubmed", "id": "9997", "tool": "t"})
    first, second = fake.requests
    assert (first.method, first.endpoint, first.status) == ("POST", "esearch.fcgi", 200)
    assert first.params["api_key"] == "k" and first.params["email"] == "e@x"
    assert (second.method, second.endpoint, second.params["id"]) == ("GET", "efetch.fcgi", "9997")
    assert fake.max_requests_in_any_second() == 2
    fake.reset_stats()
    assert fake.requests == [] and fake.request_count == 0


def test_unknown_endpoint_is_404(fake, http):
    assert http.get(fake.url + "einfo.fcgi").status_code == 404


def test_binds_loopback_only(fake):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from atlas.fakes.loopback import LoopbackThread

    assert fake.url.startswith("http://127.0.0.1:")
    with pytest.raises(ValueError, match="loopback only"):
        LoopbackThread().start(ThreadingHTTPServer(("0.0.0.0", 0), BaseHTTPRequestHandler), "wide-open")


# ---------------------------------------------------------------- command line


def test_serve_blocks_until_stopped(tmp_path, http):
    write_synthetic_corpus(tmp_path, 3)
    ready: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(target=serve, args=(tmp_path, 0, 50.0), kwargs={"ready": ready.append, "stop": stop})
    thread.start()
    try:
        for _ in range(100):
            if ready:
                break
            stop.wait(0.05)
        url = ready[0].rsplit(" at ", 1)[1]
        assert "serving 3 records" in ready[0]
        reply = http.post(url + "esearch.fcgi", data={"db": "pubmed", "term": DEFAULT_QUERY})
        assert _root(reply.content).findtext("Count") == "3"
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_main_rejects_a_missing_corpus(tmp_path):
    with pytest.raises(SystemExit):
        main(["--corpus", str(tmp_path / "nope")])
