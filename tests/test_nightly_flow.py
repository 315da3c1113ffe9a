"""The real nightly flow on Prefect's ephemeral engine, against the loopback fake E-utilities.

Covers what only shows end to end: a re-run over the same records writes
nothing, and its artifact says so; the mdat pass finds a revised record and
stores it as a new version; transient service faults are retried inside a run,
while an error NCBI answers on purpose fails it at once; a failed batch leaves
the watermark where it was; a malformed record is reported while its batch is
stored; a killed run is finished by the next one with nothing duplicated; and a
locked database fails clearly without writing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import duckdb
import pytest

from atlas.errors import DatabaseLocked, ServiceError
from atlas.fakes.eutils import FakeEutils
from atlas.store import Store
from flows.nightly import nightly

REPO = Path(__file__).resolve().parent.parent
AS_OF = date(2025, 10, 31)
RATE = 30.0

TABLES = ("papers", "records", "extractions", "classifications", "summaries", "deletions")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    target = tmp_path / "corpus"
    shutil.copytree(REPO / "data" / "sample" / "pubmed", target)
    return target


@pytest.fixture
def fake(corpus: Path):
    with FakeEutils(corpus, rate_limit=RATE) as server:
        yield server


def overrides(fake: FakeEutils, data_dir: Path, **extra) -> dict:
    return {"data_dir": str(data_dir), "eutils_url": fake.url, "ncbi_email": "tests@example.org",
            "requests_per_second": RATE, "first_run_days": 120, "retry_wait_base": 0.05, **extra}


def row_counts(db: Path) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}


def test_first_run_stores_scans_summarises_publishes_and_an_unchanged_rerun_writes_nothing(
        fake: FakeEutils, tmp_path: Path) -> None:
    settings = overrides(fake, tmp_path / "data")
    first = nightly(as_of=AS_OF, overrides=settings)
    assert first["status"] == "completed"
    assert first["inserted"] == first["found"] > 100
    assert first["scan"]["extracted"] == first["inserted"]
    assert first["generate"]["generated"] == first["inserted"]
    db = tmp_path / "data" / "atlas.duckdb"
    before = row_counts(db)

    # The same night again, with an overlap long enough to re-read the last weeks: all found, nothing written.
    second = nightly(as_of=AS_OF, overrides={**settings, "overlap_days": 30})
    assert second["status"] == "completed"
    assert second["window"] == "2025-10-01..2025-10-31"
    assert second["found"] > 20 and second["unchanged"] == second["found"]
    assert (second["inserted"], second["scan"]["extracted"], second["scan"]["decided"],
            second["generate"]["generated"]) == (0, 0, 0, 0)
    assert row_counts(db) == before

    snapshot = tmp_path / "data" / "atlas.snapshot.duckdb"
    with duckdb.connect(str(snapshot), read_only=True) as conn:
        runs = conn.execute("SELECT run_id, status FROM run_summary ORDER BY started_at").fetchall()
        assert [status for _, status in runs] == ["completed", "completed"]  # the run row precedes its snapshot
        evidence = conn.execute("SELECT count(*), count(pem), count(summary_status) FROM evidence").fetchone()
        assert evidence == (first["inserted"],) * 3
        line = conn.execute("SELECT versions FROM evidence LIMIT 1").fetchone()[0]
        assert line.startswith("Generator v1 / Scanner v") and line.endswith("/ policy v0.1")
    assert (tmp_path / "data" / "pages" / "index.html").exists()
    assert (tmp_path / "data" / "export" / "evidence.parquet").exists()

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        reports = [a for a in client.read_latest_artifacts() if a.key == "nightly-summary"]
    assert reports and f"run `{second['run_id']}`: completed" in reports[0].data
    assert f"| found | {second['found']} |" in reports[0].data and "| inserted | 0 |" in reports[0].data


def test_a_revised_record_is_found_by_the_mdat_pass_and_stored_as_a_new_version(
        fake: FakeEutils, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = overrides(fake, tmp_path / "data")
    with caplog.at_level("INFO"):
        first = nightly(as_of=AS_OF, overrides=settings)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("summaries: ")]
    assert progress and progress[-1] == f"summaries: {first['inserted']} of {first['inserted']} (100%)"  # shown live
    old = min(fake.pmids(), key=lambda pmid: fake.record(pmid).entrez)  # entered weeks before the next window
    fake.revise(old, date(2025, 11, 5))
    later = nightly(as_of=date(2025, 11, 7), overrides=settings)
    assert later["window"] == "2025-10-28..2025-11-07"  # the watermark minus the 3-day overlap
    assert (later["found"], later["inserted"]) == (1, 1)
    with duckdb.connect(str(tmp_path / "data" / "atlas.duckdb"), read_only=True) as conn:
        versions = conn.execute("SELECT revised_date FROM papers WHERE pmid = ? ORDER BY seq", [old]).fetchall()
    assert versions[-1] == (date(2025, 11, 5),) and len(versions) == 2  # the earlier version is kept
    assert first["inserted"] == first["found"]


def test_service_faults_are_retried_and_nothing_is_lost(fake: FakeEutils, tmp_path: Path) -> None:
    fake.faults.rate_limit_storm(4).server_errors(2, endpoint="efetch.fcgi").truncate(1, endpoint="efetch.fcgi")
    fake.faults.html_page(1, status=503, endpoint="esearch.fcgi")
    counts = nightly(as_of=AS_OF, overrides=overrides(fake, tmp_path / "data", batch_size=40))
    assert counts["status"] == "completed"
    assert counts["retries"] >= 8
    assert counts["inserted"] == counts["found"] > 100
    assert counts["failed_batches"] == 0


@pytest.mark.parametrize("fault", ["in_band_error", "html_page"])
def test_an_error_ncbi_answers_on_purpose_fails_the_run_at_once(fake: FakeEutils, tmp_path: Path, fault: str) -> None:
    """An in-band ERROR or an HTML page (HTTP 200) is not retried: the run fails, the next run does the window."""
    data = tmp_path / "data"
    getattr(fake.faults, fault)(1, endpoint="esearch.fcgi")
    with pytest.raises(ServiceError, match="in-band" if fault == "in_band_error" else "HTML page"):
        nightly(as_of=AS_OF, overrides=overrides(fake, data))
    assert fake.request_count == 1
    with duckdb.connect(str(data / "atlas.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT status FROM run_summary").fetchall() == [("failed",)]
        assert conn.execute("SELECT count(*) FROM current_watermarks").fetchone()[0] == 0
    assert row_counts(data / "atlas.duckdb")["papers"] == 0
    retried = nightly(as_of=AS_OF, overrides=overrides(fake, data))
    assert retried["status"] == "completed" and retried["inserted"] == retried["found"] > 100


def test_a_batch_that_keeps_failing_is_recorded_and_the_window_is_retried(fake: FakeEutils, tmp_path: Path) -> None:
    data = tmp_path / "data"
    fake.faults.server_errors(50, status=502, endpoint="efetch.fcgi")
    failed = nightly(as_of=AS_OF, overrides=overrides(fake, data, max_retries=1, batch_size=1000))
    assert failed["status"] == "partial" and failed["failed_batches"] == 1 and failed["inserted"] == 0
    db = data / "atlas.duckdb"
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM current_watermarks").fetchone()[0] == 0
        stages = conn.execute("SELECT DISTINCT stage FROM paper_failures").fetchall()
        assert stages == [("fetch",)]
    fake.faults.clear()
    retried = nightly(as_of=AS_OF, overrides=overrides(fake, data))
    assert retried["status"] == "completed"
    assert retried["window"] == failed["window"]
    assert retried["inserted"] == failed["found"]
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("SELECT value FROM current_watermarks").fetchone()[0] == AS_OF


def test_a_malformed_record_is_reported_and_its_batch_is_stored(corpus: Path, tmp_path: Path) -> None:
    week = sorted(corpus.glob("*.xml"))[0]
    text = week.read_text("utf-8")
    first_pmid = text.split('<PMID Version="1">', 1)[1].split("<", 1)[0]
    week.write_text(text.replace(f'<PMID Version="1">{first_pmid}', f'<PMID Version="one">{first_pmid}', 1), "utf-8")
    with FakeEutils(corpus, rate_limit=RATE) as server:
        counts = nightly(as_of=AS_OF, overrides=overrides(server, tmp_path / "data"))
    assert counts["failed"] == 1 and counts["inserted"] == counts["found"] - 1
    with duckdb.connect(str(tmp_path / "data" / "atlas.duckdb"), read_only=True) as conn:
        failure = conn.execute("SELECT pmid, stage, error, raw IS NOT NULL FROM paper_failures").fetchall()
        assert failure == [(first_pmid, "parse", failure[0][2], True)]
        assert "Version" in failure[0][2] or "ValueError" in failure[0][2]
        assert conn.execute("SELECT count(*) FROM current_papers WHERE pmid = ?", [first_pmid]).fetchone()[0] == 0


RUN_NIGHTLY = textwrap.dedent("""
    import sys
    from datetime import date
    from flows.nightly import nightly
    nightly(as_of=date(2025, 10, 31), overrides={
        "data_dir": sys.argv[1], "eutils_url": sys.argv[2], "ncbi_email": "tests@example.org",
        "requests_per_second": 30.0, "first_run_days": 120, "batch_size": 10})
""")


def test_a_killed_run_is_finished_by_the_next_with_nothing_duplicated(fake: FakeEutils, tmp_path: Path) -> None:
    """Also: while a run holds the live database, analysts read the snapshot and get a clear lock message."""
    data = tmp_path / "data"
    earlier = nightly(as_of=date(2025, 8, 31), overrides=overrides(fake, data, first_run_days=30))
    assert earlier["status"] == "completed" and earlier["inserted"] > 0
    fake.reset_stats()
    fake.faults.slow(30, seconds=0.4, endpoint="efetch.fcgi")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    child = subprocess.Popen([sys.executable, "-c", RUN_NIGHTLY, str(data), fake.url], cwd=REPO, env=env,
                             start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while sum(r.endpoint == "efetch.fcgi" for r in fake.requests) < 4:
            assert child.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run never reached its fourth batch"
            time.sleep(0.05)
        with duckdb.connect(str(data / "atlas.snapshot.duckdb"), read_only=True) as analyst:
            assert analyst.execute("SELECT count(*) FROM evidence").fetchone()[0] == earlier["inserted"]
        with pytest.raises(DatabaseLocked, match="atlas.snapshot.duckdb"):
            Store.open(data / "atlas.duckdb", read_only=True, snapshot=data / "atlas.snapshot.duckdb")
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    fake.faults.clear()
    db = data / "atlas.duckdb"
    partial = row_counts(db)
    assert earlier["inserted"] < partial["papers"] < 100

    counts = nightly(as_of=AS_OF, overrides=overrides(fake, data))
    assert counts["status"] == "completed"
    assert counts["unchanged"] > partial["papers"] - earlier["inserted"]  # the killed run's papers are not rewritten
    with duckdb.connect(str(db), read_only=True) as conn:
        total, distinct = conn.execute("SELECT count(*), count(DISTINCT pmid) FROM papers").fetchone()
        assert total == distinct == partial["papers"] + counts["inserted"] == 112  # every on-topic demo paper
        assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == total
        statuses = [r[0] for r in conn.execute("SELECT status FROM run_summary ORDER BY started_at").fetchall()]
        assert statuses == ["completed", "running or interrupted", "completed"]


HOLD_LOCK = "import sys, time, duckdb; c = duckdb.connect(sys.argv[1]); print('held', flush=True); time.sleep(60)"


def test_a_locked_database_fails_the_run_clearly_and_writes_nothing(fake: FakeEutils, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(data / "atlas.duckdb")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DatabaseLocked, match="atlas.snapshot.duckdb"):
            nightly(as_of=AS_OF, overrides=overrides(fake, data))
    finally:
        holder.kill()
        holder.wait()
    assert not [r for r in fake.requests if r.endpoint == "efetch.fcgi"]
