"""The markdown a run attaches to Prefect: counts, versions, cost and failures, safe in a table."""

from atlas.report import run_markdown


def test_report_shows_counts_versions_cost_and_failures_as_table_cells() -> None:
    text = run_markdown("nightly", {
        "run_id": "r1", "status": "partial", "versions": {"scanner": "1.0.0", "policy": "0.1"},
        "inserted": 12, "generate": {"cost_usd": 0.42, "llm_calls": 7},
        "failures": [{"stage": "parse", "pmid": "123", "error": "bad | value\nsecond line"}],
        "new_pmids": ["1", "2"],
    })
    assert text.startswith("# nightly run `r1`: partial")
    assert "Versions: policy 0.1, scanner 1.0.0" in text
    assert "| inserted | 12 |" in text and "| cost_usd | 0.42 |" in text
    assert "| parse | 123 | bad \\| value second line |" in text
    assert "new_pmids" not in text


def test_report_says_when_there_were_no_failures() -> None:
    assert "## Failures (0 shown)\n\nNone." in run_markdown("backfill", {"run_id": "r2", "status": "completed"})
