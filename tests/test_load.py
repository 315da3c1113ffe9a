"""`atlas load`: whole PubMed XML files (baseline or daily update files) into the store."""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from atlas.cli import app
from atlas.errors import ParseError
from atlas.ingest import load_pubmed_xml
from atlas.models import Paper, content_hash
from atlas.pubmed.parse import iter_records
from atlas.store import Store
from atlas.store.papers import write_batch

UPDATE_FILE = Path(__file__).parent / "fixtures" / "pubmed" / (
    "medline16n0902_legacy_medlinecitationset_update_deletecitation.xml.gz")
DELETED = "26432306"  # the file's one DeleteCitation
REVISED = "26702167"  # one of its 604 citations


@pytest.fixture
def store(tmp_path: Path):
    """A store that already holds two of our papers: an older version of REVISED, and DELETED."""
    papers = [r for r in iter_records(UPDATE_FILE) if isinstance(r, Paper)]
    revised = next(p for p in papers if p.pmid == REVISED)
    older = dataclasses.replace(revised, title="An older title", raw_xml=b"<old/>", content_hash=content_hash(b"<old/>"))
    doomed = dataclasses.replace(papers[0], pmid=DELETED, raw_xml=b"<doomed/>", content_hash=content_hash(b"<doomed/>"))
    with Store.open(tmp_path / "atlas.duckdb") as opened:
        write_batch(opened, [older, doomed], run_id="earlier")
        yield opened


def test_an_update_file_revises_and_deletes_our_papers_and_leaves_the_rest(store):
    counts = load_pubmed_xml(store, UPDATE_FILE, run_id="load", batch_size=100)
    assert (counts.read, counts.skipped) == (605, 603)
    assert (counts.stored.inserted, counts.stored.deleted) == (1, 1)
    conn = store.conn
    assert conn.execute("SELECT count(*) FROM papers").fetchone()[0] == 3  # two earlier rows and the revision
    assert conn.execute("SELECT title FROM current_papers WHERE pmid = ?", [REVISED]).fetchone()[0] == \
        "Insanity Defense: Past, Present, and Future."
    assert conn.execute("SELECT pmid FROM deleted_papers").fetchall() == [(DELETED,)]
    assert conn.execute("SELECT count(*) FROM current_papers WHERE pmid = ?", [DELETED]).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM papers WHERE pmid = ?", [DELETED]).fetchone()[0] == 1  # history kept
    again = load_pubmed_xml(store, UPDATE_FILE, run_id="again")
    assert (again.stored.inserted, again.stored.deleted, again.stored.unchanged) == (0, 0, 2)


def test_all_stores_every_record_the_same_with_workers(store, tmp_path):
    counts = load_pubmed_xml(store, UPDATE_FILE, run_id="load", known_only=False, batch_size=50, workers=2)
    assert (counts.read, counts.skipped, counts.stored.inserted, counts.stored.deleted) == (605, 0, 604, 1)
    serial = load_pubmed_xml(store, UPDATE_FILE, run_id="again", known_only=False)
    assert (serial.stored.inserted, serial.stored.unchanged) == (0, 605)
    assert store.conn.execute("SELECT count(*) FROM current_papers").fetchone()[0] == 604


def test_a_damaged_file_keeps_the_records_before_the_damage(store, tmp_path):
    data = gzip.decompress(UPDATE_FILE.read_bytes())
    cut = tmp_path / "cut.xml"
    cut.write_bytes(data[: data.index(b"</MedlineCitation>", len(data) // 2) - 30])
    before = []
    with pytest.raises(ParseError):
        for record in iter_records(cut):
            before.append(record)
    seen = []
    with pytest.raises(ParseError):
        load_pubmed_xml(store, cut, run_id="load", known_only=False, batch_size=64,
                        on_batch=lambda counts: seen.append(counts.stored.inserted))
    assert seen[-1] == len(before) > 64  # the last, partial batch was written before the error
    stored = {row[0] for row in store.conn.execute("SELECT pmid FROM current_papers").fetchall()}
    assert stored == {record.pmid for record in before} | {REVISED, DELETED}


def test_cli_load_counts_records_and_names_problems(tmp_path):
    data = tmp_path / "data"
    runner = CliRunner()
    loaded = runner.invoke(app, ["load", "--data-dir", str(data), "--all", str(UPDATE_FILE)], terminal_width=200)
    assert loaded.exit_code == 0, loaded.output
    assert "inserted" in loaded.output and "604" in loaded.output
    with duckdb.connect(str(data / "atlas.snapshot.duckdb"), read_only=True) as conn:  # published after the load
        assert conn.execute("SELECT flow, status FROM run_summary").fetchall() == [("load", "completed")]
        assert conn.execute("SELECT count(*) FROM deleted_papers").fetchone()[0] == 1
    missing = runner.invoke(app, ["load", "--data-dir", str(data), str(tmp_path / "nope.xml.gz")])
    assert missing.exit_code == 1 and "nope.xml.gz: no such file" in missing.output
    broken = tmp_path / "broken.xml"
    broken.write_bytes(b"<PubmedArticleSet><PubmedArticle><MedlineCitation>")
    failed = runner.invoke(app, ["load", "--data-dir", str(data), str(broken)], terminal_width=200)
    assert failed.exit_code == 1 and "broken.xml" in failed.output and "malformed or truncated" in failed.output
    with duckdb.connect(str(data / "atlas.snapshot.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT status FROM run_summary ORDER BY started_at").fetchall()[-1] == ("failed",)
