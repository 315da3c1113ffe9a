"""Methods-section extraction from PMC JATS full text (tests/fixtures/pmc plus small hand-made articles)."""

from __future__ import annotations

from pathlib import Path

import pytest

from atlas.errors import ParseError
from atlas.pubmed.jats import extract_methods, is_open_access

PMC = Path(__file__).parent / "fixtures" / "pmc"
OAI_WITH_METHODS = PMC / "pmc_oai_pmh_getrecord_jats_PMC4500000_with_methods.xml"
CORRECTION_NOTICE = PMC / "efetch_pmc_articleset_correction_notice.xml"


def test_oai_pmh_record_methods_section():
    methods = extract_methods(OAI_WITH_METHODS.read_bytes())
    lines = methods.split("\n")
    assert lines[0] == "SUBJECTS AND METHODS"
    assert lines[1].startswith("Thirty patients (16 males, 14 females) who had experienced a stroke within the previous year")
    assert (
        "the following inclusion criteria were used: age <65 years, able to walk independently, Korean "
        "mini-mental state examination (MMSE-K) score >24, and able to understand the study procedures"
    ) in methods
    assert "The exclusion criteria were medication use, which can influence gait ability and balance" in methods
    # the table nested inside a paragraph becomes its own lines
    assert "Table 1." in lines and "Multifactorial fall prevention program" in lines
    assert "Exercise type | Time (sets/duration)" in lines
    assert "A comparison of the general characteristics was performed using the independent t-test or χ2 test." in methods
    assert lines[-1].endswith("A significance level of 0.05 was used for all measurements.")
    # nothing from the other sections or the front matter
    for elsewhere in ("INTRODUCTION", "RESULTS", "DISCUSSION", "Effects of a multifactorial fall prevention program"):
        assert elsewhere not in methods
    assert "  " not in methods


def test_oai_pmh_record_is_open_access():
    assert is_open_access(OAI_WITH_METHODS.read_bytes()) is True


def test_correction_notice_has_no_methods_but_is_open_access():
    data = CORRECTION_NOTICE.read_bytes()
    assert extract_methods(data) is None
    assert is_open_access(data) is True


def _article(body: str, front: str = "", wrap: bool = True) -> bytes:
    article = (
        '<article xmlns:mml="http://www.w3.org/1998/Math/MathML" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'article-type="research-article"><front><article-meta>{front}</article-meta></front><body>{body}</body></article>'
    )
    if wrap:
        article = f'<?xml version="1.0"?><pmc-articleset>{article}</pmc-articleset>'
    return article.encode("utf-8")


def test_methods_found_by_title_with_numbering_and_subsections():
    body = (
        "<sec><title>1. Introduction</title><p>ME/CFS is common.</p></sec>"
        "<sec><title>2. Materials and Methods</title>"
        "<sec><title>2.1. Participants</title><p>Patients met the <italic>Canadian Consensus Criteria</italic>"
        " (CCC) and reported post-exertional malaise.</p>"
        "<list><list-item><p>age 18–65</p></list-item><list-item><p>no other diagnosis</p></list-item></list></sec>"
        "<sec><title>2.2. Statistics</title><p>We used <inline-formula><alternatives>"
        "<mml:math><mml:msup><mml:mi>χ</mml:mi><mml:mn>2</mml:mn></mml:msup></mml:math>"
        "<tex-math>\\chi^2</tex-math><inline-graphic xlink:href='f1.gif'/></alternatives></inline-formula> tests."
        "</p></sec></sec>"
        "<sec><title>3. Results</title><p>Fifty people took part.</p></sec>"
    )
    methods = extract_methods(_article(body))
    assert methods == (
        "2. Materials and Methods\n"
        "2.1. Participants\n"
        "Patients met the Canadian Consensus Criteria (CCC) and reported post-exertional malaise.\n"
        "age 18–65\n"
        "no other diagnosis\n"
        "2.2. Statistics\n"
        "We used χ^2 tests."
    )


@pytest.mark.parametrize(
    "title",
    ["Methods", "METHODS", "Method", "Patients and methods", "Subjects and Methods", "Participants",
     "Study design", "Materials & methods", "Research design and methods", "Methodology", "II. Methods"],
)
def test_methods_title_variants(title):
    escaped = title.replace("&", "&amp;")
    body = f"<sec><title>Background</title><p>x</p></sec><sec><title>{escaped}</title><p>Inclusion text.</p></sec>"
    assert extract_methods(_article(body)) == f"{title}\nInclusion text."


@pytest.mark.parametrize("title", ["Results", "Discussion", "Method comparison with earlier cohorts", "Limitations"])
def test_non_methods_titles_are_ignored(title):
    assert extract_methods(_article(f"<sec><title>{title}</title><p>Some text.</p></sec>")) is None


def test_methods_found_by_sec_type_and_several_sections_joined():
    body = (
        '<sec sec-type="materials|methods"><title>Experimental</title><p>Cells were grown.</p></sec>'
        '<sec sec-type="results"><title>Findings</title><p>Cells grew.</p></sec>'
        '<sec sec-type="subjects"><title>Who took part</title><p>Twenty adults.</p></sec>'
    )
    assert extract_methods(_article(body, wrap=False)) == (
        "Experimental\nCells were grown.\n\nWho took part\nTwenty adults."
    )


def test_jats_namespace_as_in_oai_records():
    doc = (
        '<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><GetRecord><record><metadata>'
        '<article xmlns="https://jats.nlm.nih.gov/ns/archiving/1.3/"><body>'
        '<sec id="s1"><title>Patients and Methods</title><p>Fukuda criteria were used.</p></sec>'
        "</body></article></metadata></record></GetRecord></OAI-PMH>"
    ).encode()
    assert extract_methods(doc) == "Patients and Methods\nFukuda criteria were used."
    assert is_open_access(doc) is None


def test_article_without_body_or_sections():
    assert extract_methods(_article("<p>Only a paragraph.</p>")) is None
    no_body = b"<pmc-articleset><article><front><article-meta/></front></article></pmc-articleset>"
    assert extract_methods(no_body) is None


def test_open_access_verdicts_from_permissions():
    licensed = _article(
        "<p>x</p>",
        front='<permissions><license license-type="open-access" xlink:href="https://creativecommons.org/licenses/by/4.0/">'
        "<license-p>CC BY</license-p></license></permissions>",
    )
    closed = _article(
        "<p>x</p>", front="<permissions><copyright-statement>© Publisher 2020</copyright-statement></permissions>"
    )
    silent = _article("<p>x</p>")
    assert is_open_access(licensed) is True
    assert is_open_access(closed) is False
    assert is_open_access(silent) is None


def test_bad_documents_raise_parse_error():
    with pytest.raises(ParseError, match="malformed or truncated"):
        extract_methods(OAI_WITH_METHODS.read_bytes()[:5000])
    with pytest.raises(ParseError, match="empty"):
        extract_methods(b"")
    with pytest.raises(ParseError, match=r"no <article> in PMC document \(root element <html>\)"):
        extract_methods(b"<html><body><p>Service unavailable</p></body></html>")
    oai_error = (
        b'<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><error code="idDoesNotExist">'
        b"No matching identifier in PMC</error></OAI-PMH>"
    )
    with pytest.raises(ParseError, match="idDoesNotExist: No matching identifier in PMC"):
        is_open_access(oai_error)


def test_entities_are_not_expanded():
    hostile = (
        b'<?xml version="1.0"?><!DOCTYPE article [<!ENTITY big "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA">]>'
        b"<article><body><sec><title>Methods</title><p>&big;&big;</p></sec></body></article>"
    )
    assert "AAAA" not in (extract_methods(hostile) or "")


def test_formula_alternatives_without_mathml_fall_back_to_tex():
    body = (
        "<sec><title>Methods</title><p>Scores <inline-formula><alternatives><inline-graphic xlink:href='a.gif'/>"
        "<tex-math>\\geq 5</tex-math></alternatives></inline-formula> counted.</p>"
        "<disp-formula><mml:math><mml:mfrac><mml:mi>a</mml:mi><mml:mi>b</mml:mi></mml:mfrac></mml:math></disp-formula>"
        "</sec>"
    )
    assert extract_methods(_article(body)) == "Methods\nScores \\geq 5 counted.\na/b"
