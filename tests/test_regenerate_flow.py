"""The regenerate flow on Prefect's ephemeral engine, and the `atlas regenerate` command."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from atlas.fakes.openai_server import FakeOpenAIServer
from atlas.models import Paper, content_hash
from atlas.store import Store
from atlas.store.papers import write_batch
from generator.cli import register
from generator.pipeline import report_markdown

FIXTURES = Path(__file__).parent / "fixtures" / "generator"


def load_papers(path: Path) -> None:
    papers = []
    for line in (FIXTURES / "papers.jsonl").read_text("utf-8").splitlines():
        row = json.loads(line)
        papers.append(Paper(pmid=row["pmid"], title=row["title"], abstract=row["abstract"], raw_xml=line,
                            content_hash=content_hash(line)))
    with Store.open(path) as store:
        write_batch(store, papers, run_id="load")


def query(path: Path, sql: str) -> list[tuple]:
    with Store.open(path) as store:
        return store.conn.execute(sql).fetchall()


def test_flow_generates_records_the_run_and_publishes_a_report(tmp_path):
    from prefect.client.orchestration import get_client

    from flows.regenerate import regenerate

    db = tmp_path / "atlas.duckdb"
    load_papers(db)
    with FakeOpenAIServer() as fake:
        fake.inject("server_error", count=2)  # one paper fails both of its attempts
        overrides = {"llm_base_url": fake.base_url, "llm_model": "fake-model", "llm_max_retries": 1,
                     "llm_concurrency": 1, "llm_prices": {"fake-model": {"input": 1.0, "output": 2.0}}}
        counts = regenerate(db_path=str(db), overrides=overrides)
        assert counts["status"] == "partial" and counts["failed"] == 1 and counts["ok"] == 10
        again = regenerate(db_path=str(db), overrides=overrides)
        assert again["status"] == "completed" and again["ok"] == 1 and again["generated"] == 1
    runs = query(db, "SELECT flow, status, versions FROM run_summary ORDER BY started_at")
    assert [(flow, status) for flow, status, _ in runs] == [("regenerate", "partial"), ("regenerate", "completed")]
    assert json.loads(runs[0][2]) == {"generator": "1", "checks": "2"}
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
    reports = [a for a in artifact if a.key == "regenerate-summary"]
    assert reports and "| ok | 1 |" in reports[0].data and "Generator v1" in reports[0].data


def test_report_lists_versions_counts_cost_and_failures():
    text = report_markdown({"generator_version": "1", "checks_version": "1", "prompt_hash": "abc", "backend": "b",
                            "model": "m", "generated": 3, "ok": 1, "failed": 2, "cost_usd": 0.5,
                            "left_for_budget": 4, "failures": [{"pmid": "9", "error": "server error (500): a|b"}]},
                           title="Regenerate run `r`: partial")
    assert "Generator v1 / checks v1 / prompt abc / backend b (m)" in text
    assert "| cost_usd | 0.5 |" in text and "| 9 | server error (500): a\\|b |" in text
    assert "4 paper(s) left" in text


def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_regenerate_dry_run_selection_and_force(tmp_path, monkeypatch):
    db = tmp_path / "atlas.duckdb"
    load_papers(db)
    runner = CliRunner()
    with FakeOpenAIServer() as fake:
        monkeypatch.setenv("ATLAS_LLM_BASE_URL", fake.base_url)
        monkeypatch.setenv("ATLAS_LLM_MODEL", "fake-model")
        monkeypatch.setenv("ATLAS_LLM_PRICES", '{"fake-model": {"input": 0.15, "output": 0.6}}')
        dry = runner.invoke(cli(), ["regenerate", "--dry-run", "--db", str(db)])
        assert dry.exit_code == 0, dry.output
        assert "12 paper(s) to summarise, 11 LLM call(s)" in dry.output and "estimated $0.00" in dry.output
        assert fake.requests == 0
        done = runner.invoke(cli(), ["regenerate", "--db", str(db)])
        assert done.exit_code == 0, done.output
        assert "regenerate completed: 12 generated (ok 11, flagged 1" in done.output and "11 LLM call(s)" in done.output
        again = runner.invoke(cli(), ["regenerate", "--db", str(db)])
        assert "0 generated" in again.output and "12 unchanged" in again.output
        forced = runner.invoke(cli(), ["regenerate", "--pmid", "41074089", "--db", str(db)])
        assert "1 generated" in forced.output
        assert fake.requests == 12
    both = runner.invoke(cli(), ["regenerate", "--all", "--pmid", "1", "--db", str(db)])
    assert both.exit_code == 2 and "use only one of --pmid, --since and --all" in both.output
    bad_date = runner.invoke(cli(), ["regenerate", "--since", "yesterday", "--db", str(db)])
    assert bad_date.exit_code == 2 and "is not a date" in bad_date.output


def test_flow_refuses_secrets_as_parameters(tmp_path):
    import pytest

    from flows.regenerate import regenerate

    with pytest.raises(ValueError, match="through the environment"):
        regenerate(db_path=str(tmp_path / "x.duckdb"), overrides={"llm_api_key": "not-a-real-key"})


def test_cli_runs_the_flow_when_the_composition_root_supplies_it(tmp_path):
    from flows.regenerate import regenerate

    db = tmp_path / "atlas.duckdb"
    load_papers(db)
    app = typer.Typer()
    register(app, regenerate_flow=regenerate)
    result = CliRunner().invoke(app, ["regenerate", "--since", "2000-01-01", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "regenerate completed: 12 generated" in result.output
    assert query(db, "SELECT count(*) FROM current_summaries WHERE backend = 'extractive'") == [(12,)]
