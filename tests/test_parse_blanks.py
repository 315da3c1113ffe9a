"""Records are parsed with blank text nodes dropped; no field may read differently for it."""

from __future__ import annotations

import random

import pytest
from lxml import etree

from atlas.models import Paper
from atlas.pubmed.parse import (
    SegmentReader,
    _article_paper,
    _BlanksDropped,
    _LeanParser,
    _read_record,
    _xml_parser_kwargs,
    collapse_ws,
    parse_record,
    safe_xml_parser,
)
from tests.test_parse import ALL_FIXTURES, fixture_bytes

LEAN = dict(remove_blank_text=True, **_xml_parser_kwargs())


def _lean(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode(), etree.XMLParser(**LEAN))


def _lean_read_raises(segment: bytes) -> bool:
    """Whether reading the blank-dropping parse of ``segment`` stops to ask for blanks kept."""
    try:
        _article_paper(etree.fromstring(segment, _LeanParser(**LEAN)))
    except _BlanksDropped:
        return True
    return False


def test_libxml2_drops_blanks_only_where_the_readers_look_for_it():
    """Pins the libxml2 rule SegmentReader relies on: an upgrade that changes it fails here."""
    assert _lean("<E><i>a</i> <i>b</i></E>")[0].tail is None  # no leading text: the space is dropped
    assert _lean("<E>x <i>a</i> <i>b</i></E>")[0].tail == " "  # after leading text: kept
    assert _lean("<E><i>a</i>b <i>c</i> <i>d</i></E>")[1].tail == " "  # after any text: kept
    assert _lean("<R><E> </E></R>")[0].text == " "  # an element's whole content: kept
    assert _lean("<R>\n  <E>x</E>\n</R>").text is None  # indentation: dropped


def _records(kind: str) -> list[bytes]:
    """Every PubmedArticle / PubmedBookArticle in the fixtures, as bytes."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    found = []
    for name in ALL_FIXTURES:
        for child in etree.fromstring(fixture_bytes(name), parser):
            if child.tag == kind:
                found.append(etree.tostring(child, encoding="UTF-8", xml_declaration=False, with_tail=False))
    return found


def _read_keeping_blanks(segment: bytes) -> Paper:
    return _read_record(etree.fromstring(segment, safe_xml_parser()), _article_paper, segment)


def test_every_fixture_record_reads_the_same_as_with_blanks_kept():
    reader = SegmentReader()
    articles = _records("PubmedArticle")
    rechecked = 0
    for segment in articles:
        (lean,) = reader.read(b"PubmedArticle", segment)
        assert lean == _read_keeping_blanks(segment)
        rechecked += _lean_read_raises(segment)
    assert len(articles) > 60
    assert 0 < rechecked < len(articles) // 4  # the lean parse is the rule, the re-parse the exception


ARTICLE = """<PubmedArticle><MedlineCitation Status="MEDLINE" Owner="NLM"><PMID Version="1">123</PMID>
  <Article PubModel="Print">
    <Journal><Title>J</Title></Journal>
    <ArticleTitle>{title}</ArticleTitle>
    <Pagination><MedlinePgn>{pages}</MedlinePgn></Pagination>
    <Abstract><AbstractText>{abstract}</AbstractText></Abstract>
    <AuthorList><Author ValidYN="Y"><CollectiveName>{collective}</CollectiveName></Author></AuthorList>
  </Article>
  <MeshHeadingList><MeshHeading><DescriptorName UI="D1">{mesh}</DescriptorName></MeshHeading></MeshHeadingList>
  <KeywordList><Keyword>{keyword}</Keyword></KeywordList>
</MedlineCitation></PubmedArticle>"""
PLAIN = {"title": "Fatigue.", "pages": "1-9", "abstract": "Text.", "collective": "Group", "mesh": "Fatigue", "keyword": "ME/CFS"}


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("title", "<i>Borrelia</i> <i>burgdorferi</i> and fatigue", "Borrelia burgdorferi and fatigue"),
        ("title", "Cells <i><b>CD8</b> <b>T</b></i> in ME/CFS", "Cells CD8 T in ME/CFS"),
        ("abstract", "<b>Aim</b> <i>to</i> measure", "Aim to measure"),
        ("collective", "<i>ME</i> <i>CFS</i> group", "ME CFS group"),
        ("keyword", "<sup>1</sup> <sub>2</sub>", "1 2"),
        ("pages", "<i>e1</i> <i>e9</i>", "e1 e9"),
        ("abstract", 'Dose <mml:math xmlns:mml="http://www.w3.org/1998/Math/MathML"><mml:mi>a<mml:mi>b</mml:mi> '
                     '<mml:mi>c</mml:mi></mml:mi></mml:math>', "Dose ab c"),
    ],
)
def test_records_that_lose_a_blank_without_it_are_read_with_blanks_kept(field, value, expected):
    segment = ARTICLE.format(**{**PLAIN, field: value}).encode()
    assert _lean_read_raises(segment)
    (paper,) = SegmentReader().read(b"PubmedArticle", segment)
    assert paper == _read_keeping_blanks(segment)
    read = {"title": paper.title, "abstract": paper.abstract, "collective": paper.authors[0].collective,
            "keyword": paper.keywords[0], "pages": paper.pages}
    assert read[field] == expected
    assert parse_record(segment) == paper  # the public entry takes the same path


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("title", "<i>Borrelia</i> burgdorferi and <i>fatigue</i>", "Borrelia burgdorferi and fatigue"),
        ("title", " <i>Borrelia</i> and fatigue <i>x</i> ", "Borrelia and fatigue x"),
        ("abstract", "<b>Background:</b> The aim <sup>2</sup>", "Background: The aim 2"),
    ],
)
def test_an_outermost_element_that_starts_with_a_tag_is_read_from_the_lean_parse(field, value, expected):
    """Only its first and last blanks can be gone, and those are stripped in both parses."""
    segment = ARTICLE.format(**{**PLAIN, field: value}).encode()
    assert not _lean_read_raises(segment)
    (paper,) = SegmentReader().read(b"PubmedArticle", segment)
    assert paper == _read_keeping_blanks(segment)
    assert {"title": paper.title, "abstract": paper.abstract}[field] == expected


def test_leaf_text_beside_a_comment_reads_the_same_in_both_parses():
    segment = ARTICLE.format(**{**PLAIN, "mesh": " <!-- c -->"}).encode()
    (paper,) = SegmentReader().read(b"PubmedArticle", segment)
    assert paper == _read_keeping_blanks(segment)
    assert paper.mesh_terms == []  # a blank descriptor is no MeSH term


def test_a_plain_record_is_read_from_the_lean_parse():
    segment = ARTICLE.format(**PLAIN).encode()
    assert not _lean_read_raises(segment)
    (paper,) = SegmentReader().read(b"PubmedArticle", segment)
    assert (paper.title, paper.abstract, paper.keywords) == ("Fatigue.", "Text.", ["ME/CFS"])


def test_collapse_ws_is_split_and_join_for_every_kind_of_whitespace():
    spaces = " \t\n\r\v\f\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000"
    alphabet = "ab ÅçΩ–é.," + spaces + "\u200b\ufeff"
    rng = random.Random(7)
    for _ in range(20_000):
        size = rng.choice([0, 1, 2, 5, 20, 70, 300])
        text = "".join(rng.choice(alphabet if rng.random() < 0.5 else "abc  d") for _ in range(size))
        assert collapse_ws(text) == " ".join(text.split()), repr(text)
