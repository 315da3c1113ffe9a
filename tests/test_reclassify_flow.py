"""The reclassify flow on Prefect's ephemeral engine, and `atlas reclassify` without it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from atlas.config import Settings
from atlas.models import Paper
from atlas.store import Store
from atlas.store.papers import write_batch
from scanner.cli import register
from scanner.pipeline import scan_pending
from scanner.policy import load_policy

POLICY = Path(__file__).resolve().parent.parent / "policies" / "v0.1.yaml"


def seeded(db: Path, tmp_path: Path) -> Path:
    """A database with scanned papers, and a stricter v0.2 policy file (Fukuda requires PEM)."""
    papers = [Paper(pmid=str(i), title="ME/CFS study", abstract=text, content_hash=f"h{i}")
              for i, text in enumerate(["All patients met the Fukuda criteria and were recruited.",
                                        "Patients who met the Canadian Consensus Criteria were included.",
                                        "A cohort of patients and healthy controls."])]
    with Store.open(db) as store:
        write_batch(store, papers, run_id="load")
        scan_pending(store, Settings(fetch_fulltext=False), load_policy(POLICY), run_id="scan")
    strict = tmp_path / "v0.2.yaml"
    strict.write_text(POLICY.read_text("utf-8").replace('version: "0.1"', 'version: "0.2"').replace(
        "    requires_pem: false\n    reason: \"PEM over 24 hours", "    requires_pem: true\n    reason: \"PEM over 24 hours"))
    return strict


def labels(db: Path) -> dict[str, tuple[str, str]]:
    with Store.open(db) as store:
        rows = store.conn.execute("SELECT pmid, pem, policy_version FROM current_classifications").fetchall()
    return {pmid: (pem, version) for pmid, pem, version in rows}


def test_flow_relabels_records_the_run_and_publishes_an_artifact(tmp_path):
    from prefect.client.orchestration import get_client

    from flows.reclassify import reclassify

    db = tmp_path / "atlas.duckdb"
    strict = seeded(db, tmp_path)
    assert labels(db)["0"] == ("not_required", "0.1")
    counts = reclassify(policy_path=str(strict), db_path=str(db))
    assert counts["decided"] == 3 and counts["changed_pem"] == 1 and counts["llm_calls"] == 0
    assert labels(db) == {"0": ("required", "0.2"), "1": ("required", "0.2"), "2": ("unclear", "0.2")}
    assert (tmp_path / "atlas.snapshot.duckdb").is_file()  # published beside the database it was given
    assert (tmp_path / "pages" / "index.html").is_file()
    with Store.open(db) as store:
        run = store.conn.execute("SELECT flow, status, versions, counts FROM run_summary WHERE flow = 'reclassify'"
                                 ).fetchone()
    assert run[:2] == ("reclassify", "completed")
    assert json.loads(run[2])["policy"] == "0.2" and json.loads(run[3])["changed_pem"] == 1
    with get_client(sync_client=True) as client:
        artifacts = [a for a in client.read_latest_artifacts() if a.key == "reclassify-summary"]
    assert artifacts and "policy v0.2" in artifacts[0].data and "| changed_pem | 1 |" in artifacts[0].data


def test_cli_reclassify_without_prefect(tmp_path):
    db = tmp_path / "atlas.duckdb"
    strict = seeded(db, tmp_path)
    root = typer.Typer()
    register(root)
    result = CliRunner().invoke(root, ["reclassify", "--policy", str(strict), "--db", str(db)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "changed_pem" in result.output
    assert labels(db)["0"] == ("required", "0.2")
    with Store.open(db) as store:
        assert store.conn.execute("SELECT status FROM run_summary WHERE flow = 'reclassify'").fetchone() == ("completed",)
