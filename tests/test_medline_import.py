"""MEDLINE text (PubMed format) import, checked against the XML path on the same records.

The files in tests/fixtures/medline are the PubMed-format rendering of XML
fixtures in tests/fixtures/pubmed (see the README there).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from atlas.models import BadRecord, Paper, content_hash
from atlas.pubmed.medline import iter_medline, parse_medline
from atlas.pubmed.parse import iter_records

MEDLINE = Path(__file__).parent / "fixtures" / "medline"
PUBMED = Path(__file__).parent / "fixtures" / "pubmed"

XML_TWINS = {
    "36987902": "pubmed_36987902_norwegian_vernacular_nonascii_multilanguage.xml",
    "31978945": "pubmed_31978945_collectivename_investigating_team.xml",
    "25760099": "pubmed_25760099_german_vernaculartitle_bracket_title_b_tag.xml",
    "27350240": "pubmed_27350240_no_abstract_comment.xml",
    "32887691": "pubmed_32887691_erratumin_structured_nonascii_authors.xml",
}


def _imported() -> dict[str, Paper]:
    found = {}
    for path in sorted(MEDLINE.iterdir()):
        if path.suffix in (".txt", ".nbib"):
            for record in iter_medline(path):
                assert isinstance(record, Paper), record
                found[record.pmid] = record
    return found


def _from_xml(pmid: str) -> Paper:
    (paper,) = list(iter_records(PUBMED / XML_TWINS[pmid]))
    return paper


def test_fixture_files_and_record_counts():
    counts = {p.name: len(parse_medline(p)) for p in sorted(MEDLINE.iterdir()) if p.suffix in (".txt", ".nbib")}
    assert counts == {"pubmed-31978945.nbib": 1, "pubmed-36987902.txt": 1, "pubmed-three-records.txt": 3}
    assert sorted(_imported()) == sorted(XML_TWINS)


@pytest.mark.parametrize("pmid", sorted(XML_TWINS))
def test_import_agrees_with_xml_path(pmid):
    imported = _imported()[pmid]
    xml = _from_xml(pmid)
    assert imported.kind == "medline-import"
    for field in (
        "pmid",
        "title",
        "vernacular_title",
        "abstract",
        "doi",
        "pmcid",
        "year",
        "pub_date",
        "journal",
        "volume",
        "issue",
        "pages",
        "publication_types",
        "mesh_terms",
        "keywords",
        "languages",
        "status",
        "entrez_date",
        "revised_date",
        "errata",
        "retracted_by",
        "is_retracted",
    ):
        assert getattr(imported, field) == getattr(xml, field), field
    assert [(a.last, a.fore, a.initials, a.collective, a.orcid) for a in imported.authors] == [
        (a.last, a.fore, a.initials, a.collective, a.orcid) for a in xml.authors
    ]
    assert [(s.label, s.text) for s in imported.abstract_sections] == [(s.label, s.text) for s in xml.abstract_sections]


def test_norwegian_record_details():
    paper = _imported()["36987902"]
    assert paper.title == "Patients over 75 years admitted to the National Burn Centre, Haukeland University Hospital, 2000-19."
    assert paper.vernacular_title.startswith("Pasienter over 75 år innlagt ved Brannskadeavdelinga")
    assert paper.languages == ["eng", "nor"]
    assert [s.label for s in paper.abstract_sections] == ["BACKGROUND", "MATERIAL AND METHOD", "RESULTS", "INTERPRETATION"]
    assert paper.abstract.startswith("BACKGROUND: The number of burn patients over the age of 75")
    assert "\nMATERIAL AND METHOD: All patients ≥ 75 years admitted" in paper.abstract
    assert "(p < 0.0001)" in paper.abstract and "(p &lt; 0.0001)" in paper.abstract_markup
    assert paper.authors[0].display == "Bruserud Ø" and paper.authors[0].orcid == "0000-0001-7093-6988"
    assert paper.mesh_terms[-3:] == ["Frailty", "Burns", "Hospitals, University"]
    assert paper.entrez_date == date(2023, 3, 29)  # CRDT, not EDAT (2023/03/30)
    assert paper.revised_date == date(2023, 4, 12)
    assert paper.journal_abbrev == "Tidsskr Nor Laegeforen"
    assert paper.doi == "10.4045/tidsskr.22.0358"


def test_raw_text_is_the_record_and_hash_follows_it():
    for paper in _imported().values():
        assert paper.raw_xml.startswith(f"PMID- {paper.pmid}\n".encode())
        assert b"\r" not in paper.raw_xml
        assert paper.content_hash == content_hash(paper.raw_xml)
    three = [p.raw_xml for p in iter_medline(MEDLINE / "pubmed-three-records.txt")]
    assert len(set(three)) == 3 and all(b"\n\n" not in raw for raw in three)
    source = (MEDLINE / "pubmed-three-records.txt").read_bytes().replace(b"\r\n", b"\n")
    assert all(raw in source for raw in three)  # each record's own lines, as saved


def test_crlf_nbib_reads_like_lf_text():
    crlf = (MEDLINE / "pubmed-31978945.nbib").read_bytes()
    assert b"\r\n" in crlf
    from_crlf = parse_medline(crlf)
    from_lf = parse_medline(crlf.replace(b"\r\n", b"\n").decode("utf-8"))
    assert from_crlf == from_lf
    paper = from_crlf[0]
    assert len(paper.authors) == 19
    assert paper.authors[-1].collective == "China Novel Coronavirus Investigating and Research Team"
    assert paper.pmcid == "PMC7092803"


def test_erratum_and_structured_labels_with_question_mark():
    paper = _imported()["32887691"]
    assert paper.errata == ["35470203"]
    assert "WHAT IS NEW?" in [s.label for s in paper.abstract_sections]
    assert len(paper.authors) == 85


SMALL = """
PMID- 29000001
OWN - NLM
STAT- Publisher
DP  - 2017 Oct-Dec
TI  - Fatigue after exertion: a retracted example with a long title that wraps
      onto a second line.
LID - S0000-0000(17)00001-1 [pii]
LID - 10.1000/example.2017.1 [doi]
AB  - Plain unstructured abstract text. With two sentences.
AU  - Smith JA
AU  - O'Brien-Lee K
CN  - ME Research Group
LA  - eng
PT  - Journal Article
PT  - Retracted Publication
TA  - Example J
JT  - Example journal
RIN - Example J. 2018;1:2. doi: 10.1000/notice. PMID: 30000002
EIN - Example J. 2018;1:3. A correction without a PMID that is long enough to
      wrap onto a continuation line.
MH  - *Fatigue Syndrome, Chronic/diagnosis/*physiopathology
OT  - post-exertional malaise
EDAT- 2017/11/02 06:00
LR  - 20240230

OWN - NLM
TI  - A record without a PMID line.

PMID- 12AB
TI  - A record with a broken PMID.

PMID- 29000003
TI  - The record after the broken ones.
DP  - 2019
"""


def test_small_export_retraction_errata_and_bad_records():
    records = parse_medline(SMALL)
    assert [type(r).__name__ for r in records] == ["Paper", "BadRecord", "BadRecord", "Paper"]
    paper, no_pmid, bad_pmid, last = records
    assert paper.title == (
        "Fatigue after exertion: a retracted example with a long title that wraps onto a second line."
    )
    assert (paper.year, paper.pub_date) == (2017, "2017 Oct-Dec")
    assert paper.doi == "10.1000/example.2017.1"
    assert paper.retracted_by == ["30000002"] and paper.is_retracted is True
    assert paper.errata == [
        "Example J. 2018;1:3. A correction without a PMID that is long enough to wrap onto a continuation line."
    ]
    assert [(a.last, a.initials, a.collective) for a in paper.authors] == [
        ("Smith", "JA", None),
        ("O'Brien-Lee", "K", None),
        (None, None, "ME Research Group"),
    ]
    assert paper.mesh_terms == ["Fatigue Syndrome, Chronic"]
    assert paper.keywords == ["post-exertional malaise"]
    assert paper.abstract == "Plain unstructured abstract text. With two sentences."
    assert [(s.label, s.text) for s in paper.abstract_sections] == [
        (None, "Plain unstructured abstract text. With two sentences.")
    ]
    assert paper.entrez_date == date(2017, 11, 2)  # EDAT when there is no CRDT
    assert paper.revised_date is None  # 30 February is not a date
    assert paper.status == "Publisher"
    assert no_pmid.pmid is None and no_pmid.error == "MEDLINE record has no PMID line"
    assert no_pmid.raw_xml.startswith(b"OWN - NLM\nTI  - A record without a PMID line.")
    assert bad_pmid.pmid == "12AB" and "not a number" in bad_pmid.error
    assert last.pmid == "29000003" and last.year == 2019 and last.abstract is None


def test_path_string_and_bytes_sources_agree(tmp_path):
    path = MEDLINE / "pubmed-36987902.txt"
    expected = parse_medline(path)
    assert parse_medline(str(path)) == expected
    assert parse_medline(path.read_bytes()) == expected
    assert parse_medline(path.read_text(encoding="utf-8")) == expected
    with_bom = tmp_path / "export.nbib"
    with_bom.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert parse_medline(with_bom) == expected


def test_unsupported_source_is_rejected():
    with pytest.raises(TypeError, match="path, str or bytes"):
        parse_medline(42)


def test_empty_export_yields_nothing():
    assert parse_medline("\n\n") == []
    assert isinstance(parse_medline(b"PMID- 1\nTI  - One line.\n")[0], Paper)
    assert not any(isinstance(r, BadRecord) for r in parse_medline(MEDLINE / "pubmed-three-records.txt"))


def test_blank_continuation_line_keeps_the_record_together():
    text = (
        "PMID- 29000010\n"
        "TI  - Two-paragraph abstract.\n"
        "AB  - First paragraph of the abstract.\n"
        "      \n"
        "      Second paragraph after a blank continuation line.\n"
        "LA  - eng\n"
        "\n"
        "PMID- 29000011\n"
        "TI  - Next record.\n"
    )
    first, second = parse_medline(text)
    assert first.pmid == "29000010" and second.pmid == "29000011"
    assert first.abstract == "First paragraph of the abstract. Second paragraph after a blank continuation line."
    assert first.languages == ["eng"]
    assert b"      \n      Second paragraph" in first.raw_xml


def test_other_export_formats_are_refused_with_a_clear_error():
    from atlas.errors import InputError

    csv = "PMID,Title,Authors\n36987902,Patients over 75 years,Bruserud Ø\n"
    with pytest.raises(InputError, match="not PubMed-format"):
        parse_medline(csv)
    xml = (PUBMED / XML_TWINS["27350240"]).read_bytes()
    with pytest.raises(InputError, match="not PubMed-format"):
        parse_medline(xml)
