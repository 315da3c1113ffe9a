"""The DuckDB store on a real file: migrations, batch writes, deletions, locks, snapshots."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from atlas.errors import DatabaseLocked
from atlas.models import Author, BadRecord, Deletion, Paper, content_hash
from atlas.store import Store
from atlas.store.db import LIVE_ROW_GROUP_SIZE, Migration, bundled_migrations
from atlas.store.papers import write_batch
from atlas.store.runs import finish_run, get_watermark, recent_runs, set_watermark, start_run


FIXTURES = Path(__file__).parent / "fixtures" / "pubmed"


def make_paper(pmid: str, body: str = "") -> Paper:
    raw = f"<PubmedArticle><PMID>{pmid}</PMID>{body}</PubmedArticle>".encode()
    return Paper(pmid=pmid, title=f"Title {pmid} {body}", authors=[Author(last="Nacul", fore="Luis", initials="L")],
                 publication_types=["Journal Article"], mesh_terms=["Fatigue Syndrome, Chronic"], year=2025,
                 raw_xml=raw, content_hash=content_hash(raw))


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store.open(tmp_path / "atlas.duckdb") as opened:
        yield opened


def count(store: Store, sql: str) -> int:
    return store.conn.execute(sql).fetchone()[0]


def test_migrations_are_applied_once_in_order_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "atlas.duckdb"
    with Store.open(path) as store:
        versions = sorted(store.applied_migrations())
        assert versions == [m.version for m in bundled_migrations()]
        assert store.migrate() == []
    with Store.open(path) as again:
        assert sorted(again.applied_migrations()) == versions


def test_a_failing_migration_leaves_nothing_behind(store: Store) -> None:
    broken = Migration(999, "broken", "CREATE TABLE half_done (x INTEGER); SELECT * FROM no_such_table;")
    with pytest.raises(duckdb.Error):
        store.migrate([broken])
    assert 999 not in store.applied_migrations()
    assert count(store, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'half_done'") == 0


def test_unchanged_content_writes_nothing_and_changes_append(store: Store) -> None:
    first = write_batch(store, [make_paper("1"), make_paper("2")], run_id="r1")
    assert (first.inserted, first.unchanged) == (2, 0)
    again = write_batch(store, [make_paper("1"), make_paper("2")], run_id="r2")
    assert (again.inserted, again.unchanged) == (0, 2)
    assert count(store, "SELECT count(*) FROM papers") == 2
    assert count(store, "SELECT count(*) FROM records") == 2
    revised = write_batch(store, [make_paper("2", "<Revised/>")], run_id="r3")
    assert revised.inserted == 1 and revised.inserted_pmids == ["2"]
    assert count(store, "SELECT count(*) FROM papers") == 3
    assert store.conn.execute("SELECT title FROM current_papers WHERE pmid = '2'").fetchone()[0].endswith("<Revised/>")
    history = store.conn.execute("SELECT revision FROM paper_history WHERE pmid = '2' ORDER BY revision").fetchall()
    assert history == [(1,), (2,)]


def test_a_batch_mixing_unchanged_revised_and_new_papers_writes_only_the_changes(store: Store) -> None:
    write_batch(store, [make_paper("1"), make_paper("2")], run_id="r1")
    mixed = write_batch(store, [make_paper("1"), make_paper("2", "<Revised/>"), make_paper("3")], run_id="r2")
    assert (mixed.inserted, mixed.unchanged, mixed.inserted_pmids) == (2, 1, ["2", "3"])
    assert store.conn.execute("SELECT pmid, run_id FROM records ORDER BY seq").fetchall() == [
        ("1", "r1"), ("2", "r1"), ("2", "r2"), ("3", "r2")]


def test_raw_record_is_stored_verbatim_and_hashed_as_stored(store: Store) -> None:
    from atlas.pubmed.parse import iter_records

    source = (FIXTURES / "pubmed_20301577_pubmedbookarticle_genereviews.xml").read_bytes()
    (book,) = iter_records(source)
    other = make_paper("2")
    other.raw_xml = other.raw_xml.decode()  # text is accepted too, stored as its UTF-8 bytes
    write_batch(store, [book, other], run_id="r1")
    raw, digest = store.conn.execute("SELECT raw, content_hash FROM records WHERE pmid = '20301577'").fetchone()
    assert raw == book.raw_xml and raw in source and b"<sup>&#xae;</sup>" in raw
    assert content_hash(raw) == digest
    assert store.conn.execute("SELECT raw FROM records WHERE pmid = '2'").fetchone()[0] == other.raw_xml.encode()
    bad = BadRecord("3", "no title", "<PubmedArticle><PMID>3</PMID><Title>Ø</Title></PubmedArticle>".encode())
    write_batch(store, [bad], run_id="r2")
    assert store.conn.execute("SELECT raw FROM paper_failures WHERE pmid = '3'").fetchone()[0] == bad.raw_xml.decode()


def test_lists_and_structs_round_trip(store: Store) -> None:
    write_batch(store, [make_paper("7")], run_id="r1")
    authors, mesh = store.conn.execute("SELECT authors, mesh_terms FROM current_papers").fetchone()
    assert authors == [{"last": "Nacul", "fore": "Luis", "initials": "L", "collective": None, "orcid": None}]
    assert mesh == ["Fatigue Syndrome, Chronic"]


def test_delete_citation_marks_deleted_and_keeps_history(store: Store) -> None:
    write_batch(store, [make_paper("5"), make_paper("6")], run_id="r1")
    counts = write_batch(store, [Deletion("5")], run_id="r2")
    assert counts.deleted == 1
    assert [r[0] for r in store.conn.execute("SELECT pmid FROM current_papers ORDER BY pmid").fetchall()] == ["6"]
    assert store.conn.execute("SELECT pmid, title FROM deleted_papers").fetchall() == [("5", "Title 5 ")]
    assert count(store, "SELECT count(*) FROM paper_history WHERE pmid = '5'") == 1
    assert write_batch(store, [Deletion("5")], run_id="r3").deleted == 0


def test_a_bad_record_is_reported_and_the_rest_is_stored(store: Store) -> None:
    counts = write_batch(store, [make_paper("1"), BadRecord("2", "ArticleTitle missing", b"<PubmedArticle/>"),
                                 make_paper("3")], run_id="r1")
    assert (counts.inserted, counts.failed) == (2, 1)
    assert store.conn.execute("SELECT pmid, stage, error FROM paper_failures").fetchall() == [
        ("2", "parse", "ArticleTitle missing")]


def test_a_failed_batch_is_rolled_back_whole(store: Store) -> None:
    broken = make_paper("9")
    broken.year = "not a year"  # type: ignore[assignment]  # fails Arrow conversion mid-batch
    with pytest.raises(Exception):
        write_batch(store, [make_paper("8"), broken], run_id="r1")
    assert count(store, "SELECT count(*) FROM papers") == 0
    assert count(store, "SELECT count(*) FROM records") == 0


def test_runs_and_watermarks(store: Store) -> None:
    from datetime import date

    run_id = start_run(store, "nightly", parameters={"as_of": "2025-09-30"}, versions={"atlas": "0.1.0"})
    assert get_watermark(store, "pubmed:edat") is None
    set_watermark(store, "pubmed:edat", date(2025, 9, 1), run_id=run_id)
    set_watermark(store, "pubmed:edat", date(2025, 9, 30), run_id=run_id)
    assert get_watermark(store, "pubmed:edat") == date(2025, 9, 30)
    other = start_run(store, "nightly")
    finish_run(store, run_id, status="completed", counts={"inserted": 3})
    runs = {r["run_id"]: r for r in recent_runs(store)}
    assert runs[run_id]["status"] == "completed"
    assert runs[other]["status"] == "running or interrupted"


HOLD_LOCK = textwrap.dedent("""
    import sys, time, duckdb
    conn = duckdb.connect(sys.argv[1])
    print("holding", flush=True)
    time.sleep(60)
""")


def test_a_locked_database_gives_a_clear_message_naming_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "atlas.duckdb"
    Store.open(path).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(DatabaseLocked) as caught:
            Store.open(path, snapshot=tmp_path / "atlas.snapshot.duckdb")
        message = str(caught.value)
        assert f"process {holder.pid}" in message
        assert "atlas.snapshot.duckdb" in message
        assert "Conflicting lock" not in message
    finally:
        holder.kill()
        holder.wait()


def test_opening_the_live_file_twice_in_one_process_says_so_and_leaves_the_first_store_working(
        store: Store, tmp_path: Path) -> None:
    write_batch(store, [make_paper("1")], run_id="r1")
    for read_only in (False, True):
        with pytest.raises(DatabaseLocked) as caught:
            Store.open(store.path, read_only=read_only, snapshot=tmp_path / "atlas.snapshot.duckdb")
        assert "already open in this process" in str(caught.value)
        assert "atlas.snapshot.duckdb" in str(caught.value)
        assert "Unique file handle" not in str(caught.value)
    write_batch(store, [make_paper("2")], run_id="r2")
    assert store.conn.execute("SELECT count(*) FROM current_papers").fetchone()[0] == 2
    store.close()
    with Store.open(store.path, read_only=True) as reader:  # once closed, the file opens again
        assert reader.conn.execute("SELECT count(*) FROM current_papers").fetchone()[0] == 2


def test_snapshot_is_published_whole_and_readable_while_the_writer_is_open(store: Store, tmp_path: Path) -> None:
    write_batch(store, [make_paper("1"), make_paper("2")], run_id="r1")
    snapshot = tmp_path / "snap" / "atlas.snapshot.duckdb"
    store.publish_snapshot(snapshot)
    reader = duckdb.connect(str(snapshot), read_only=True)
    assert reader.execute("SELECT count(*) FROM current_papers").fetchone()[0] == 2
    write_batch(store, [make_paper("3")], run_id="r2")
    assert reader.execute("SELECT count(*) FROM current_papers").fetchone()[0] == 2  # the old snapshot stays whole
    reader.close()
    store.publish_snapshot(snapshot)
    with duckdb.connect(str(snapshot), read_only=True) as fresh:
        assert fresh.execute("SELECT count(*) FROM current_papers").fetchone()[0] == 3
    assert [p.name for p in snapshot.parent.iterdir()] == ["atlas.snapshot.duckdb"]


def _row_group_sizes(conn: duckdb.DuckDBPyConnection, table: str) -> list[int]:
    return [row[0] for row in conn.execute(
        f"SELECT sum(count) FROM pragma_storage_info('{table}') WHERE column_id = 0 AND segment_type <> 'VALIDITY' "
        "GROUP BY row_group_id ORDER BY row_group_id"
    ).fetchall()]


def test_live_file_writes_small_row_groups_and_the_snapshot_full_ones(store: Store, tmp_path: Path) -> None:
    # Batches are checkpointed as they commit; each leaves whole 2,048-row groups and one partial group.
    store.conn.execute("SET checkpoint_threshold = '1KB'")
    for first in (0, 3000, 6000):
        write_batch(store, [make_paper(str(n)) for n in range(first, first + 3000)], run_id="bulk")
    store.conn.execute("CHECKPOINT")
    live = _row_group_sizes(store.conn, "papers")
    assert sum(live) == 9000
    assert max(live) == LIVE_ROW_GROUP_SIZE
    assert len(live) == 6  # no vacuum merged the partial groups (which would shift and re-compress the rest)
    snapshot = store.publish_snapshot(tmp_path / "atlas.snapshot.duckdb")
    with duckdb.connect(str(snapshot), read_only=True) as reader:
        assert _row_group_sizes(reader, "papers") == [9000]
        assert reader.execute("SELECT count(DISTINCT pmid) FROM current_papers").fetchone()[0] == 9000


def test_a_database_file_named_like_a_duckdb_catalog_opens_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "memory.duckdb"
    with Store.open(path) as store:
        write_batch(store, [make_paper("1")], run_id="r1")
    with Store.open(path) as again:
        assert count(again, "SELECT count(*) FROM current_papers") == 1
    with Store.open(path, read_only=True) as reader:
        assert count(reader, "SELECT count(*) FROM papers") == 1


def test_evidence_flags_retractions_from_the_record_and_from_a_notice(store: Store) -> None:
    retracted_in_record = make_paper("100")
    retracted_in_record.is_retracted, retracted_in_record.retracted_by = True, ["900"]
    retracted_by_notice = make_paper("101")
    notice = make_paper("901")
    notice.publication_types, notice.retraction_of = ["Retraction of Publication"], ["101"]
    write_batch(store, [retracted_in_record, retracted_by_notice, notice, make_paper("102")], run_id="r1")
    rows = dict(store.conn.execute("SELECT pmid, is_retracted FROM evidence").fetchall())
    assert rows == {"100": True, "101": True, "901": False, "102": False}
    flagged = store.conn.execute("SELECT pmid, retracted_by FROM retracted_papers ORDER BY pmid").fetchall()
    assert flagged == [("100", ["900"]), ("101", ["901"])]
