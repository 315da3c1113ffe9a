"""Scanning stored papers in a real DuckDB file: extraction, decisions, full text, re-runs, reclassification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlas.config import Settings
from atlas.fakes.eutils import FakeEutils
from atlas.models import Paper
from atlas.pubmed.client import EutilsClient
from atlas.store import Store
from atlas.store.papers import write_batch
from atlas.store.runs import start_run
from scanner.extract import SCANNER_VERSION
from scanner.pipeline import reclassify_all, scan_pending
from scanner.policy import load_policy, parse_policy

POLICY_PATH = Path(__file__).resolve().parent.parent / "policies" / "v0.1.yaml"
FAST = 1000.0

JATS = (
    '<article xmlns:xlink="http://www.w3.org/1999/xlink" article-type="research-article"><front><article-meta>'
    '<article-id pub-id-type="pmcid">PMC111</article-id></article-meta></front><body>'
    "<sec><title>Introduction</title><p>The Fukuda criteria are broad.</p></sec>"
    "<sec><title>Methods</title><sec><title>Participants</title><p>All patients met the <italic>International "
    "Consensus Criteria</italic> and were recruited from a specialist clinic.</p></sec></sec>"
    "<sec><title>Results</title><p>Forty people took part.</p></sec></body></article>"
).encode()


def paper(pmid: str, abstract: str, *, pmcid: str | None = None, version_tag: str = "1", **fields) -> Paper:
    return Paper(pmid=pmid, title=fields.pop("title", f"Study {pmid} of ME/CFS"), abstract=abstract, pmcid=pmcid,
                 year=fields.pop("year", 2024), content_hash=f"hash-{pmid}-{version_tag}", raw_xml=f"<x>{pmid}</x>",
                 **fields)


PAPERS = [
    paper("100", "All patients met the Fukuda criteria and were recruited.", publication_types=["Journal Article"]),
    paper("200", "Patients who met the Canadian Consensus Criteria were randomised.",
          publication_types=["Randomized Controlled Trial"]),
    paper("300", "Near-infrared spectroscopy was used in patients and healthy controls.", pmcid="PMC111"),
    paper("400", "A narrative review of case definitions.", title="Case definitions: a review", pmcid="PMC999"),
]


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "atlas.duckdb") as opened:
        write_batch(opened, PAPERS, run_id="ingest")
        yield opened


@pytest.fixture(scope="module")
def policy():
    return load_policy(POLICY_PATH)


def current(store: Store) -> dict[str, tuple]:
    rows = store.conn.execute("SELECT pmid, criteria, pem, design, policy_version FROM current_classifications").fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def test_a_full_text_whose_licence_is_not_open_access_gives_no_methods(tmp_path, policy):
    closed = JATS.replace(b"</article-meta>", b"<permissions><copyright-statement>(c) Publisher 2024"
                                              b"</copyright-statement></permissions></article-meta>")
    settings = Settings(requests_per_second=FAST, max_retries=0)
    with Store.open(tmp_path / "closed.duckdb") as opened, FakeEutils(rate_limit=FAST) as fake:
        write_batch(opened, [PAPERS[2]], run_id="ingest")
        fake.add_pmc("PMC111", closed)
        with EutilsClient(settings.model_copy(update={"eutils_url": fake.url}), retry_wait_base=0.001) as client:
            counts = scan_pending(opened, settings, policy, run_id="r1", client=client)
        assert (counts["fulltext_fetched"], counts["fulltext_not_open_access"]) == (1, 1)
        assert opened.conn.execute("SELECT methods FROM fulltexts WHERE pmid = '300'").fetchone() == (None,)
        assert current(opened)["300"][:2] == (["not_stated"], "unclear")  # read from the abstract alone


def test_migration_creates_tables_and_views(store):
    names = {r[0] for r in store.conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"extractions", "classifications", "fulltexts", "current_extractions", "current_classifications",
            "classification_history"} <= names
    assert 2 in store.applied_migrations()


def test_scan_fetches_fulltext_extracts_decides_and_skips_done_work(store, policy):
    settings = Settings(requests_per_second=FAST, max_retries=0)
    with FakeEutils(rate_limit=FAST) as fake:
        fake.add_pmc("PMC111", JATS)
        with EutilsClient(settings.model_copy(update={"eutils_url": fake.url}), retry_wait_base=0.001) as client:
            counts = scan_pending(store, settings, policy, run_id="r1", client=client)
    assert counts["pending"] == 4 and counts["extracted"] == 4 and counts["decided"] == 4
    assert counts["fulltext_fetched"] == 1 and counts["fulltext_failed"] == 1
    assert current(store) == {
        "100": (["fukuda_1994"], "not_required", "unknown", "0.1"),
        "200": (["ccc_2003"], "required", "rct", "0.1"),
        "300": (["icc_2011"], "required", "case_control", "0.1"),
        "400": (["not_stated"], "not_applicable", "review", "0.1"),
    }
    # the methods text was stored, read and quoted as methods
    methods = store.conn.execute("SELECT methods FROM fulltexts WHERE pmid = '300'").fetchone()[0]
    assert "International Consensus Criteria" in methods
    evidence = store.conn.execute("SELECT evidence FROM current_classifications WHERE pmid = '300'").fetchone()[0]
    assert evidence[0]["source"] == "methods" and evidence[0]["quote"] in methods
    sources = store.conn.execute("SELECT sources FROM extractions WHERE pmid = '300'").fetchone()[0]
    assert sources == ["title", "abstract", "methods"]
    # a paper whose full text could not be fetched is a failure row, and was still scanned from its abstract
    failures = store.conn.execute("SELECT pmid, stage, error FROM paper_failures").fetchall()
    assert [(f[0], f[1]) for f in failures] == [("400", "fulltext")] and "PMC" in failures[0][2]
    # every stored fact quote is its source's slice
    texts = {p.pmid: {"title": p.title, "abstract": p.abstract, "publication_types": "; ".join(p.publication_types)}
             for p in PAPERS}
    texts["300"]["methods"] = methods
    checked = 0
    for pmid, facts_json in store.conn.execute("SELECT pmid, facts FROM extractions").fetchall():
        facts = json.loads(facts_json)
        assert facts["scanner_version"] == SCANNER_VERSION
        for kind in ("mentions", "pem", "designs", "combinations", "population"):
            for fact in facts[kind]:
                assert texts[pmid][fact["source"]][fact["start"]:fact["end"]] == fact["quote"]
                checked += 1
    assert checked >= 8

    again = scan_pending(store, settings, policy, run_id="r2", client=None)
    assert again["pending"] == 0 and again["extracted"] == 0 and again["decided"] == 0
    assert store.conn.execute("SELECT count(*) FROM classifications").fetchone()[0] == 4


def test_a_revised_paper_is_rescanned_and_a_new_policy_decides_only_its_new_hash(store, policy):
    settings = Settings(fetch_fulltext=False)
    scan_pending(store, settings, policy, run_id="r1")
    write_batch(store, [paper("100", "All patients met the Canadian Consensus Criteria.", version_tag="2")], run_id="i2")
    counts = scan_pending(store, settings, policy, run_id="r2")
    assert (counts["pending"], counts["extracted"], counts["decided"]) == (1, 1, 1)
    assert current(store)["100"][:2] == (["ccc_2003"], "required")
    history = store.conn.execute(
        "SELECT revision, pem FROM classification_history WHERE pmid = '100' ORDER BY revision").fetchall()
    assert history == [(1, "not_required"), (2, "required")]


def test_one_paper_failing_extraction_is_a_failure_row_not_a_crashed_run(store, policy):
    class Boom:
        def complete_json(self, **kwargs):
            raise RuntimeError("endpoint exploded")

    settings = Settings(fetch_fulltext=False, llm_extractor=True, llm_base_url="http://127.0.0.1:9/v1")
    counts = scan_pending(store, settings, policy, run_id="r1", llm=Boom())
    assert counts["failed"] == 4 and counts["extracted"] == 0
    rows = store.conn.execute("SELECT DISTINCT stage, error FROM paper_failures").fetchall()
    assert rows == [("scan", "RuntimeError: endpoint exploded")]
    # the next run (LLM fixed or switched off) scans them
    assert scan_pending(store, Settings(fetch_fulltext=False), policy, run_id="r2")["extracted"] == 4


def test_reclassify_all_rededices_from_facts_and_the_latest_policy_is_current(store, policy):
    scan_pending(store, Settings(fetch_fulltext=False), policy, run_id="r1")
    strict_text = POLICY_PATH.read_text("utf-8").replace('version: "0.1"', 'version: "0.2"').replace(
        "    requires_pem: false\n    reason: \"PEM over 24 hours", "    requires_pem: true\n    reason: \"PEM over 24 hours")
    strict = parse_policy(strict_text.encode())
    run_id = start_run(store, "reclassify")
    counts = reclassify_all(store, strict, run_id=run_id)
    assert counts["extractions"] == 4 and counts["decided"] == 4
    assert counts["changed_pem"] == 1 and counts["llm_calls"] == 0 and counts["policy_version"] == "0.2"
    assert current(store)["100"] == (["fukuda_1994"], "required", "unknown", "0.2")
    assert {v[3] for v in current(store).values()} == {"0.2"}
    # applying the old policy again makes it current again (append-only; nothing rewritten)
    reclassify_all(store, policy, run_id="back")
    assert current(store)["100"][1:] == ("not_required", "unknown", "0.1")
    assert store.conn.execute("SELECT count(*) FROM classifications").fetchone()[0] == 12
    # a nightly scan under the current policy has nothing left to decide
    assert scan_pending(store, Settings(fetch_fulltext=False), policy, run_id="r3")["decided"] == 0


def test_deleted_papers_leave_the_current_views(store, policy):
    from atlas.models import Deletion

    scan_pending(store, Settings(fetch_fulltext=False), policy, run_id="r1")
    write_batch(store, [Deletion(pmid="200")], run_id="del")
    assert "200" not in current(store)
    assert store.conn.execute("SELECT count(*) FROM current_extractions").fetchone()[0] == 3


def test_deciding_in_many_small_batches_decides_everything(store, policy):
    """Decisions are written between batches on the same connection; every extraction still gets one."""
    from scanner.pipeline import decide_pending

    scan_pending(store, Settings(fetch_fulltext=False), policy, run_id="r1", batch_size=1)
    strict = parse_policy(POLICY_PATH.read_bytes() + b"\n# another identity\n")
    assert decide_pending(store, strict, run_id="r2", batch_size=1) == 4
    assert store.conn.execute("SELECT count(DISTINCT pmid) FROM classifications WHERE policy_hash = ?",
                              [strict.hash]).fetchone()[0] == 4


def test_llm_extractor_through_the_fake_server_logs_its_calls(store, policy):
    from atlas.fakes.openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        settings = Settings(fetch_fulltext=False, llm_extractor=True, llm_base_url=server.base_url,
                            llm_model="fake-model", llm_max_retries=0, llm_timeout=5.0)
        counts = scan_pending(store, settings, policy, run_id="llm-run")
    assert counts["extracted"] == 4 and counts["llm_calls"] == 4
    extractors = {r[0] for r in store.conn.execute("SELECT extractor FROM extractions").fetchall()}
    assert extractors == {"llm:fake-model"}
    assert store.conn.execute("SELECT count(*) FROM llm_calls WHERE run_id = 'llm-run'").fetchone()[0] == 4
    # design cues still come from the metadata the rules read
    assert current(store)["200"][2] == "rct"
