"""The parallel reader gives the serial reader's records, in order, through every path the serial reader takes."""

from __future__ import annotations

import gzip
import io
import multiprocessing
import os
import signal

import pytest
from lxml import etree

from atlas.errors import ParseError
from atlas.models import BadRecord, Deletion, Paper
from atlas.pubmed import parallel
from atlas.pubmed.parallel import iter_segments_parallel
from atlas.pubmed.parse import _iter_stream, _Slicer, iter_records, parse_records
from tests.test_parse import ALL_FIXTURES, FIXTURES, _Trickle, fixture_bytes


def _all_fixture_records() -> list[str]:
    """Every record of every fixture, as text, legacy MedlineCitations and DeleteCitations included."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    records = []
    for name in ALL_FIXTURES:
        root = etree.fromstring(fixture_bytes(name), parser)
        records.extend(etree.tostring(child, encoding="unicode", with_tail=False) for child in root)
    return records


def _document(records: list[str]) -> bytes:
    body = "\n".join(records)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<PubmedArticleSet>\n{body}\n</PubmedArticleSet>\n'.encode()


def _parallel(data: bytes, chunk_records: int = 3, workers: int = 2) -> list:
    return list(iter_segments_parallel(io.BytesIO(data), workers, chunk_records))


def _reading_in_parallel(data: bytes, chunk_records: int = 3):
    """What ``iter_records(data, workers=2)`` gives, in chunks small enough that a short document has several."""
    return _iter_stream(iter_segments_parallel(io.BytesIO(data), 2, chunk_records))


@pytest.fixture(params=["helpers", "here", "alternate"])
def share(request, monkeypatch):
    """Who reads the chunks: only the helpers, only the calling process, or each in turn (checked to happen)."""
    counts = {"sent": 0, "here": 0}
    real_send, real_free = parallel._WorkerPool.send, parallel._WorkerPool.free_worker
    real_here = parallel._read_items_here
    turn = iter(range(1 << 30))

    def send(pool, worker, chunk_id, message):
        counts["sent"] += 1
        real_send(pool, worker, chunk_id, message)

    def here(reader, items):
        counts["here"] += 1
        return real_here(reader, items)

    monkeypatch.setattr(parallel._WorkerPool, "send", send)
    monkeypatch.setattr(parallel, "_read_items_here", here)
    if request.param == "helpers":
        monkeypatch.setattr(parallel, "_AHEAD_LIMIT", -1)  # never reads a chunk itself: waits for a helper
    elif request.param == "here":
        monkeypatch.setattr(parallel._WorkerPool, "free_worker", lambda pool, size: None)
    else:
        monkeypatch.setattr(parallel._WorkerPool, "free_worker",
                            lambda pool, size: real_free(pool, size) if next(turn) % 2 else None)
    yield request.param
    if request.param == "helpers":
        assert counts["sent"] and not counts["here"], counts
    elif request.param == "here":
        assert counts["here"] and not counts["sent"], counts
    else:
        assert counts["sent"] and counts["here"], counts


@pytest.fixture(scope="module")
def mixed_records() -> list[str]:
    records = _all_fixture_records()
    assert len(records) > 650
    return records


def test_every_fixture_record_reads_the_same_in_order(share, mixed_records):
    data = _document(mixed_records)
    serial = parse_records(data)
    assert {type(r) for r in serial} == {Paper, Deletion}
    assert _parallel(data, chunk_records=5) == serial
    assert list(iter_records(gzip.compress(data), workers=2)) == serial  # the public entry, gzip input


def test_each_fixture_file_reads_the_same_through_the_public_entry():
    for name in ("pubmed_2024dtd_four_records_one_without_abstract.xml.gz", "pubmed_20301577_pubmedbookarticle_genereviews.xml",
                 "pubmed_37909814_empty_pubmedarticleset.xml"):
        assert list(iter_records(FIXTURES / name, workers=2)) == list(iter_records(FIXTURES / name)), name


def test_record_not_well_formed_alone_hands_the_rest_to_the_tree_reader(share, mixed_records):
    records = [r for r in mixed_records if r.startswith("<PubmedArticle>")][:40]
    records[17] = records[17].replace("<MedlineCitation ", "<!-- a stray </PubmedArticle> --><MedlineCitation ", 1)
    data = _document(records)
    serial = parse_records(data)
    assert len(serial) == 40 and all(isinstance(r, Paper) for r in serial)
    for chunk_records in (1, 3, 64):
        assert _parallel(data, chunk_records) == serial


def test_records_already_handed_out_after_the_fallback_are_read_once(share, mixed_records):
    """An entity the DOCTYPE allows fails the record alone while the records after it cut cleanly."""
    records = [r for r in mixed_records if r.startswith("<PubmedArticle>")][:40]
    records[9] = records[9].replace("<ArticleTitle>", "<ArticleTitle>Caf&eacute; ", 1)
    prolog = ('<?xml version="1.0"?>\n<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN"'
              ' "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n')
    data = prolog.encode() + _document(records).split(b"\n", 1)[1]
    serial = parse_records(data)
    assert len(serial) == 40 and serial[9].title.startswith("Café ")
    for chunk_records in (1, 2, 7):
        assert _parallel(data, chunk_records) == serial


def test_text_between_records_and_a_malformed_record(share, mixed_records):
    records = [r for r in mixed_records if r.startswith("<PubmedArticle>")][:12]
    stray = _document(records[:7] + ["stray text"] + records[7:])
    assert _parallel(stray) == parse_records(stray)
    broken = records[5].replace("<PMID", "<PMID Version='1'", 1).replace("</ArticleTitle>", "", 1)
    bad = _document(records[:5] + [broken] + records[6:])
    serial_before, parallel_before = [], []
    for reader, seen in ((iter_records(bad), serial_before), (_reading_in_parallel(bad), parallel_before)):
        with pytest.raises(ParseError, match="malformed or truncated"):
            for record in reader:
                seen.append(record)
    assert parallel_before == serial_before
    assert len(serial_before) == 5


def test_unreadable_record_is_a_bad_record_in_place(share, mixed_records):
    records = [r for r in mixed_records if r.startswith("<PubmedArticle>")][:9]
    records[4] = records[4].replace("<PMID Version=\"1\">", "<PMID Version=\"x\">", 1)
    data = _document(records)
    got = _parallel(data, chunk_records=2)
    assert got == parse_records(data)
    assert isinstance(got[4], BadRecord) and got[4].raw_xml in data and "ValueError" in got[4].error


def test_truncated_document_raises_after_the_records_before_the_damage(share, mixed_records):
    data = _document([r for r in mixed_records if r.startswith("<PubmedArticle>")][:30])
    cut = data[: data.index(b"</PubmedArticle>", len(data) // 2) - 40]
    serial = []
    with pytest.raises(ParseError):
        for record in iter_records(cut):
            serial.append(record)
    parallel = []
    with pytest.raises(ParseError):
        for record in _reading_in_parallel(cut):
            parallel.append(record)
    assert parallel == serial and serial


def test_abandoned_iteration_stops_the_workers(mixed_records):
    reader = iter_records(_document(mixed_records), workers=2)
    first = [next(reader) for _ in range(5)]
    assert all(isinstance(r, (Paper, Deletion)) for r in first)
    assert multiprocessing.active_children()  # the workers are running
    reader.close()
    assert multiprocessing.active_children() == []


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers must be at least 1"):
        list(iter_records(b"<PubmedArticleSet/>", workers=0))


def test_a_worker_that_dies_is_reported_not_taken_for_the_end_of_the_file(mixed_records):
    reader = iter_records(_document(mixed_records * 3), workers=2)
    for _ in range(5):
        next(reader)
    victim = multiprocessing.active_children()[0]
    os.kill(victim.pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="a parse worker stopped unexpectedly"):
        for _ in reader:
            pass
    assert multiprocessing.active_children() == []


def test_workers_read_a_plain_file_themselves_and_give_the_same_records(share, mixed_records, tmp_path):
    records = [r for r in mixed_records if r.startswith("<PubmedArticle>")][:60]
    records[33] = records[33].replace("<ArticleTitle>", "<ArticleTitle>Caf&eacute; ", 1)  # not well-formed alone
    prolog = ('<?xml version="1.0"?>\n<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN"'
              ' "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n')
    path = tmp_path / "set.xml"
    path.write_bytes(prolog.encode() + _document(records).split(b"\n", 1)[1])
    serial = list(iter_records(path))
    with open(path, "rb") as stream:
        assert list(iter_segments_parallel(stream, 2, chunk_records=4)) == serial
    assert list(iter_records(path, workers=2)) == serial


def test_a_file_changed_while_workers_read_it_is_a_parse_error(mixed_records, tmp_path):
    path = tmp_path / "set.xml"
    path.write_bytes(_document(mixed_records * 2))
    reader = iter_records(path, workers=2)
    next(reader)
    with open(path, "ab") as out:
        out.write(b"<!-- appended -->\n")
    with pytest.raises(ParseError, match="changed while it was being read"):
        for _ in reader:
            pass
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("step", [7, 4096, 1 << 20])
def test_slicer_offsets_point_at_each_record_in_the_stream(mixed_records, step):
    data = _document(mixed_records[:80])
    slicer = _Slicer(_Trickle(data, step))
    seen = 0
    for item in slicer:
        assert isinstance(item, tuple)
        assert data[slicer.offset : slicer.offset + len(item[1])] == item[1]
        seen += 1
    assert seen == 80
