"""The streaming PubMed parser against real NCBI files (tests/fixtures/pubmed)."""

from __future__ import annotations

import gzip
import html
import io
import re
from datetime import date
from pathlib import Path

import pytest

from atlas.errors import ParseError
from atlas.models import BadRecord, Deletion, Paper, content_hash
from atlas.pubmed.parse import INLINE_TAGS, iter_records, math_text, normalise_orcid, parse_record, parse_records

FIXTURES = Path(__file__).parent / "fixtures" / "pubmed"
ALL_FIXTURES = sorted(p.name for p in FIXTURES.iterdir())


def fixture(prefix: str) -> Path:
    matches = [p for p in FIXTURES.iterdir() if p.name.startswith(prefix)]
    assert len(matches) == 1, f"expected one fixture starting {prefix!r}, found {matches}"
    return matches[0]


def papers(prefix: str) -> list[Paper]:
    records = list(iter_records(fixture(prefix)))
    assert all(isinstance(r, Paper) for r in records), records
    return records


def one(prefix: str) -> Paper:
    records = papers(prefix)
    assert len(records) == 1
    return records[0]


def by_pmid(records, pmid: str) -> Paper:
    (found,) = [r for r in records if isinstance(r, Paper) and r.pmid == pmid]
    return found


def fixture_bytes(prefix: str) -> bytes:
    path = fixture(prefix)
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


# --------------------------------------------------------------------------- whole files

EXPECTED_COUNTS = {
    "medline16n0902_legacy_medlinecitationset_update_deletecitation.xml.gz": (604, 1, "17942999"),
    "pubmed21n1002_baseline_subset_reformatted_medlinedate_collectivename.xml.gz": (45, 0, "31449448"),
    "pubmed_11748933_plus1_two_records_pubmed_not_medline.xml": (2, 0, "11748933"),
    "pubmed_12091962_plus1_two_records_one_without_abstract.xml": (2, 0, "12091962"),
    "pubmed_2024dtd_four_records_one_without_abstract.xml.gz": (4, 0, "36400559"),
    "pubmed_20301577_pubmedbookarticle_genereviews.xml": (1, 0, "20301577"),
    "pubmed_23435529_rct_structured_collectivename.xml": (1, 0, "23435529"),
    "pubmed_25760099_german_vernaculartitle_bracket_title_b_tag.xml": (1, 0, "25760099"),
    "pubmed_27350240_no_abstract_comment.xml": (1, 0, "27350240"),
    "pubmed_27797938_structured_labels_no_nlmcategory_inline_i_sub_sup.xml": (1, 0, "27797938"),
    "pubmed_28775130_structured_label_nlmcategory_u_sub_in_data_review.xml": (1, 0, "28775130"),
    "pubmed_29963580_collectivename_mathml.xml": (1, 0, "29963580"),
    "pubmed_30108519_mathml_in_abstract_pubmed_not_medline.xml": (1, 0, "30108519"),
    "pubmed_31978945_collectivename_investigating_team.xml": (1, 0, "31978945"),
    "pubmed_32887691_erratumin_structured_nonascii_authors.xml": (1, 0, "32887691"),
    "pubmed_33119379_b_and_i_in_abstract.xml": (1, 0, "33119379"),
    "pubmed_35726897_letter_no_abstract.xml": (1, 0, "35726897"),
    "pubmed_36789012_publisher_status_aheadofprint_no_mesh.xml": (1, 0, "36789012"),
    "pubmed_36987902_norwegian_vernacular_nonascii_multilanguage.xml": (1, 0, "36987902"),
    "pubmed_37909814_empty_pubmedarticleset.xml": (0, 0, None),
    "pubmed_38048813_german_editorial_no_abstract_vernacular.xml": (1, 0, "38048813"),
    "pubmed_38534005_structured_collectivename_nonascii.xml": (1, 0, "38534005"),
    "pubmed_38914053_sub_in_title_i_sub_sup_in_abstract.xml": (1, 0, "38914053"),
}


def test_every_fixture_is_pinned():
    assert sorted(EXPECTED_COUNTS) == ALL_FIXTURES


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_fixture_record_counts_and_basic_fields(name):
    expected_papers, expected_deletions, first_pmid = EXPECTED_COUNTS[name]
    records = list(iter_records(FIXTURES / name))
    found_papers = [r for r in records if isinstance(r, Paper)]
    assert len(found_papers) == expected_papers
    assert sum(isinstance(r, Deletion) for r in records) == expected_deletions
    assert not [r for r in records if isinstance(r, BadRecord)]
    if first_pmid:
        assert found_papers[0].pmid == first_pmid
    for paper in found_papers:
        assert paper.pmid.isdigit()
        assert paper.title, paper.pmid
        assert paper.year and 1900 < paper.year < 2030, paper.pmid
        assert paper.raw_xml.startswith((b"<PubmedArticle", b"<PubmedBookArticle", b"<MedlineCitation"))
        assert paper.content_hash == content_hash(paper.raw_xml)
        assert paper.languages, paper.pmid
        assert paper.publication_types, paper.pmid


def test_pmids_are_unique_within_each_file():
    for name in ALL_FIXTURES:
        pmids = [r.pmid for r in iter_records(FIXTURES / name) if isinstance(r, Paper)]
        assert len(pmids) == len(set(pmids)), name


# --------------------------------------------------------------------------- single records


def test_structured_abstract_labels_without_nlmcategory_and_inline_markup():
    paper = one("pubmed_27797938")
    assert paper.title == "Leucocyte telomere length, genetic variants at the TERT gene region and risk of pancreatic cancer."
    assert paper.title_markup == (
        "Leucocyte telomere length, genetic variants at the <i>TERT</i> gene region and risk of pancreatic cancer."
    )
    assert [(s.label, s.category) for s in paper.abstract_sections] == [
        ("OBJECTIVE", None),
        ("DESIGN", None),
        ("RESULTS", None),
        ("CONCLUSIONS", None),
    ]
    assert paper.abstract.startswith("OBJECTIVE: Telomere shortening occurs as an early event")
    assert "\nDESIGN: We measured prediagnostic leucocyte telomere length in 386" in paper.abstract
    assert paper.abstract.count("\n") == 3
    # <sub>, <sup> flattened in plain text, kept (escaped) in markup
    assert "OR 1.72; 95% CI 1.07 to 2.78; ptrend=0.048)" in paper.abstract
    results = paper.abstract_sections[2]
    assert "p<sub>trend</sub>=0.048" in results.markup
    assert "r<sup>2</sup>&lt;0.25" in results.markup
    assert "r2<0.25" in results.text
    assert paper.pmcid == "PMC5442267"
    assert paper.doi == "10.1136/gutjnl-2016-312510"
    assert paper.journal == "Gut"
    assert (paper.volume, paper.issue, paper.pages) == ("66", "6", "1116-1122")
    assert (paper.year, paper.pub_date) == (2017, "2017 Jun")
    assert paper.status == "MEDLINE"
    assert paper.keywords == ["PANCREATIC CANCER"]
    assert "Observational Study" in paper.publication_types


def test_label_and_nlmcategory_with_underline_and_escaped_less_than():
    paper = one("pubmed_28775130")
    assert [(s.label, s.category) for s in paper.abstract_sections] == [
        ("OBJECTIVES", "OBJECTIVE"),
        ("METHODS", "METHODS"),
        ("RESULTS", "RESULTS"),
        ("CONCLUSIONS", "CONCLUSIONS"),
    ]
    assert "compared with normal TSH (0.4-<4.5 mIU/L)" in paper.abstract
    assert "normal TSH (0.4-<u>&lt;</u>4.5 mIU/L)" in paper.abstract_markup
    assert paper.status == "In-Data-Review"
    # the copyright line (with ©) is not part of the abstract text
    assert "©" not in paper.abstract
    assert paper.mesh_terms == []
    assert paper.entrez_date == date(2017, 8, 5)


def test_mathml_in_abstract_is_linearised_not_dropped():
    paper = one("pubmed_30108519")
    assert "mml" not in paper.abstract and "<math" not in paper.abstract
    assert "maximal oxygen uptake ( V\u0307O_2max ) 67.6 ± 4.1 ml·kg-1·min-1]" in paper.abstract
    assert "were the best predictors of V\u0307O_2max (r = 0.72-0.79; P < 0.001)" in paper.abstract
    assert "maximal ramp incremental running test for V\u0307O_2max determination" in paper.abstract
    # markup escapes the same text and keeps only whitelisted tags
    assert "( V\u0307O_2max ) 67.6 ± 4.1 ml·kg<sup>-1</sup>·min<sup>-1</sup>]" in paper.abstract_markup
    assert paper.title == (
        'A "Blood Relationship" Between the Overlooked Minimum Lactate Equivalent and Maximal Lactate '
        "Steady State in Trained Runners. Back to the Old Days?"
    )
    assert paper.title_markup.startswith('A "<i>Blood Relationship"</i> Between')
    assert paper.status == "PubMed-not-MEDLINE"
    assert paper.mesh_terms == []
    assert paper.doi == "10.3389/fphys.2018.01034"  # from ELocationID and ArticleIdList alike
    assert paper.pmcid == "PMC6079548"
    assert (paper.year, paper.pub_date, paper.issue) == (2018, "2018", None)


def test_mathml_multiscripts_and_collective_name():
    paper = one("pubmed_29963580")
    assert "included: (1) inhaled ^3He/^129Xe MRI ventilation and apparent diffusion coefficients" in paper.abstract
    assert "(3) ultrashort echo-time ^1H MRI proton density measurements" in paper.abstract
    assert "free-breathing ^1H MRI specific ventilation" in paper.abstract
    collectives = [a.collective for a in paper.authors if a.collective]
    assert collectives == ["Canadian Respiratory Research Network"]
    capaldi = [a for a in paper.authors if a.last == "Capaldi"][0]
    # the record spells it as a URL; stored bare
    assert capaldi.orcid == "0000-0002-4590-7461"
    assert paper.keywords[0] == "asthma"


def test_german_article_with_bracketed_title_vernacular_title_and_bold_labels():
    paper = one("pubmed_25760099")
    assert paper.title == (
        "[Market Concentration in the Statutory Health Insurance of Germany since the Introduction of "
        "Free Choice of Sickness Funds]."
    )
    assert paper.vernacular_title == "Marktkonzentration in der Gesetzlichen Krankenversicherung seit Einführung der freien Kassenwahl."
    assert paper.languages == ["ger"]
    assert [(a.last, a.fore, a.initials) for a in paper.authors] == [("Götze", "R", "R")]
    assert paper.abstract.startswith("Background: The expansion of trust law to the German statutory health insurance")
    assert paper.abstract_markup.startswith("<b>Background:</b> The expansion of trust law")
    assert "<b>Methods:</b> Market concentration is measured" in paper.abstract_markup
    assert paper.abstract_sections[0].label is None
    assert paper.pages == "715-720"
    assert (paper.volume, paper.issue) == ("78", "11")
    assert (paper.year, paper.pub_date) == (2016, "2016 Nov")
    assert paper.doi == "10.1055/s-0034-1396891"
    assert paper.pmcid is None
    # descriptors only, in record order, qualifiers not folded in
    assert paper.mesh_terms == [
        "Economic Competition",
        "Germany",
        "Health Care Reform",
        "Health Care Sector",
        "Insurance Selection Bias",
        "Insurance, Disability",
        "National Health Programs",
        "Patient Freedom of Choice Laws",
    ]
    assert paper.entrez_date == date(2015, 3, 12)
    assert paper.revised_date == date(2018, 12, 2)
    assert paper.journal_abbrev == "Gesundheitswesen"


def test_comment_without_abstract():
    paper = one("pubmed_27350240")
    assert paper.title == "Computational neuroscience: Species-specific motion detectors."
    assert paper.abstract is None and paper.abstract_markup is None
    assert paper.abstract_sections == []
    assert paper.publication_types == ["Journal Article", "Comment"]
    assert paper.doi == "10.1038/nature18454"
    assert (paper.journal, paper.volume, paper.issue, paper.pages) == ("Nature", "535", "7610", "45-6")
    assert paper.pub_date == "2016 Jul 07"
    assert paper.mesh_terms == ["Motion Perception", "Neurosciences"]


def test_collective_investigating_team_and_pmc():
    paper = one("pubmed_31978945")
    assert paper.title == "A Novel Coronavirus from Patients with Pneumonia in China, 2019."
    assert len(paper.authors) == 19
    assert paper.authors[-1].collective == "China Novel Coronavirus Investigating and Research Team"
    assert paper.authors[-1].display == "China Novel Coronavirus Investigating and Research Team"
    assert paper.authors[-1].last is None
    assert paper.authors[0].display == "Zhu N"
    assert paper.pmcid == "PMC7092803"
    assert paper.doi == "10.1056/NEJMoa2001017"
    assert (paper.year, paper.pub_date) == (2020, "2020 Feb 20")


def test_erratum_links_structured_abstract_and_non_ascii_authors():
    paper = one("pubmed_32887691")
    assert paper.errata == ["35470203"]
    assert paper.retracted_by == [] and paper.retraction_of == []
    assert paper.is_retracted is False
    assert [s.label for s in paper.abstract_sections] == [
        "UPDATES",
        "CLINICAL QUESTION",
        "CONTEXT",
        "WHAT IS NEW?",
        "ABOUT THIS GUIDELINE",
        "FUTURE RECOMMENDATIONS",
    ]
    assert all(s.category is None for s in paper.abstract_sections)
    assert len(paper.authors) == 85
    assert ("Lamontagne", "François") in [(a.last, a.fore) for a in paper.authors]
    assert paper.publication_types == ["Journal Article", "Practice Guideline"]
    assert paper.pages == "m3379"
    assert paper.entrez_date == date(2020, 9, 5)


def test_bold_italic_nested_labels_inside_abstract_text():
    paper = one("pubmed_33119379")
    assert paper.abstract.startswith("Purpose/Objective: To describe the psychometrics and utility")
    assert paper.abstract_markup.startswith("<b><i>Purpose/Objective:</i></b> To describe the psychometrics")
    assert "<b><i>Results:</i></b> The NSI is a 22-item self-report" in paper.abstract_markup
    assert paper.authors[0].orcid == "0000-0002-3879-6054"


def test_letter_without_abstract_pubmed_not_medline():
    paper = one("pubmed_35726897")
    assert paper.title == "Reply."
    assert paper.abstract is None
    assert paper.publication_types == ["Letter"]
    assert paper.status == "PubMed-not-MEDLINE"
    assert [a.orcid for a in paper.authors] == ["0000-0002-9033-1756", "0000-0002-3583-1838"]


def test_publisher_status_ahead_of_print():
    paper = one("pubmed_36789012")
    assert paper.status == "Publisher"
    assert paper.mesh_terms == []
    assert paper.volume is None and paper.issue is None
    assert paper.pages == "1-20"
    assert (paper.year, paper.pub_date) == (2023, "2023 Feb 10")
    assert paper.authors[1].last == "Özmen"


def test_norwegian_two_languages_vernacular_title_and_entrez_date():
    paper = one("pubmed_36987902")
    assert paper.languages == ["eng", "nor"]
    assert paper.vernacular_title == (
        "Pasienter over 75 år innlagt ved Brannskadeavdelinga, Haukeland universitetssjukehus 2000–19."
    )
    assert [(a.last, a.fore, a.initials) for a in paper.authors[:3]] == [
        ("Bruserud", "Øyvind", "Ø"),
        ("Arnes", "Kaja", "K"),
        ("Kjørsvik", "Camilla Rygg", "CR"),
    ]
    assert paper.authors[0].orcid == "0000-0001-7093-6988"
    assert [s.label for s in paper.abstract_sections] == ["BACKGROUND", "MATERIAL AND METHOD", "RESULTS", "INTERPRETATION"]
    assert "All patients ≥ 75 years admitted" in paper.abstract
    # entrez (2023-03-29) wins over the pubmed date (2023-03-30)
    assert paper.entrez_date == date(2023, 3, 29)
    assert paper.doi == "10.4045/tidsskr.22.0358"
    assert (paper.year, paper.pub_date) == (2023, "2023 Mar 28")
    assert paper.pages is None


def test_empty_pubmed_article_set_yields_nothing():
    assert list(iter_records(fixture("pubmed_37909814"))) == []
    assert parse_records(fixture_bytes("pubmed_37909814")) == []


def test_german_editorial_without_abstract_with_vernacular_title():
    paper = one("pubmed_38048813")
    assert paper.title == "[A Broader Scope - Bio-Psycho-Social Medicine In Global Focus]."
    assert paper.vernacular_title == "A Broader Scope – Bio-psycho-soziale Medizin im globalen Fokus."
    assert paper.publication_types == ["Editorial"]
    assert paper.abstract is None
    assert paper.languages == ["ger"]


def test_label_nlmcategory_unassigned_collective_and_non_ascii():
    paper = one("pubmed_38534005")
    assert [(s.label, s.category) for s in paper.abstract_sections][:3] == [
        ("BACKGROUND", "BACKGROUND"),
        ("RECOMMENDATIONS", "CONCLUSIONS"),
        ("MEDICAL NEEDS AND TEST REQUISITION", "UNASSIGNED"),
    ]
    assert len(paper.abstract_sections) == 7
    assert [a.collective for a in paper.authors if a.collective] == [
        "Task and Finish Group for Urinalysis (TFG-U), European Federation of Clinical Chemistry "
        "and Laboratory Medicine (EFLM)"
    ]
    assert "Sören" in [a.fore for a in paper.authors]
    assert paper.authors[0].orcid == "0000-0002-3282-232X"


def test_sub_in_title_and_sup_sub_in_abstract():
    paper = one("pubmed_38914053")
    assert paper.title.startswith("Doped SnO2thin films fabricated at low temperature")
    assert paper.title_markup.startswith("Doped SnO<sub>2</sub>thin films")
    assert "carrier concentration reached up 2.5 × 1018cm-3for the as-deposited" in paper.abstract
    assert "2.5 × 10<sup>18</sup>cm<sup>-3</sup>for the as-deposited" in paper.abstract_markup


def test_rct_with_collective_group_and_nlm_categories():
    paper = one("pubmed_23435529")
    assert [(s.label, s.category) for s in paper.abstract_sections] == [
        ("PURPOSE", "OBJECTIVE"),
        ("PATIENTS AND METHODS", "METHODS"),
        ("RESULTS", "RESULTS"),
        ("CONCLUSION", "CONCLUSIONS"),
    ]
    assert paper.authors[-1].collective == "TAX 325 Study Group"
    assert len(paper.authors) == 15
    assert "Randomized Controlled Trial" in paper.publication_types
    assert paper.pages == "1207-13"
    assert paper.journal_abbrev == "J. Clin. Oncol."
    assert paper.doi == "10.1200/JCO.2012.44.6112"


def test_book_article_fields():
    paper = one("pubmed_20301577")
    assert paper.kind == "book"
    assert paper.pmid == "20301577" and paper.version == 1
    assert paper.title == "CACNA1C-Related Disorders"
    assert paper.title_markup == "<i>CACNA1C</i>-Related Disorders"
    # chapter authors only, never the six series editors
    assert [(a.last, a.fore) for a in paper.authors] == [("Napolitano", "Carlo"), ("Priori", "Silvia G")]
    assert paper.journal == "GeneReviews®"
    assert (paper.year, paper.pub_date) == (2006, "2006 Feb 15")
    assert paper.publication_types == ["Review"]
    assert paper.languages == ["eng"]
    assert [s.label for s in paper.abstract_sections] == [
        "CLINICAL CHARACTERISTICS",
        "DIAGNOSIS/TESTING",
        "MANAGEMENT",
        "GENETIC COUNSELING",
    ]
    assert "All drugs reported to prolong QT interval (see CredibleMeds<sup>®</sup>)" in paper.abstract_markup
    assert "(see CredibleMeds®)" in paper.abstract
    assert "\nMANAGEMENT: Treatment of manifestations: Beta-blockers" in paper.abstract
    assert "CACNA1C" in paper.keywords
    assert paper.entrez_date == date(2024, 12, 19)
    assert paper.revised_date == date(2024, 12, 19)
    # PMC ids in the reference list belong to cited works, not to this chapter
    assert paper.pmcid is None and paper.doi is None
    assert paper.status is None and paper.mesh_terms == []


# --------------------------------------------------------------------------- multi-record files


def test_two_records_one_without_abstract_and_season_date():
    first, second = papers("pubmed_12091962")
    assert first.pmid == "12091962"
    assert first.title == "The treatment of AIDS behind the walls of correctional facilities."
    assert first.abstract is None and first.doi is None
    assert (first.year, first.pub_date) == (1990, "1990 Spring")
    assert first.publication_types == ["Journal Article", "Review"]
    assert first.keywords == ["Health Care and Public Health", "Legal Approach"]
    assert second.pmid == "9997"
    assert second.doi == "10.1016/0005-2795(76)90109-4"
    assert (second.year, second.pub_date) == (1976, "1976 Sep 28")


def test_two_pubmed_not_medline_records():
    first, second = papers("pubmed_11748933")
    assert first.status == "MEDLINE" and second.status == "PubMed-not-MEDLINE"
    assert second.pmid == "11700088"
    assert second.title == "Proton MRI of (13)C distribution by J and chemical shift editing."
    assert second.mesh_terms == []
    assert first.authors[0].display == "Taddei AR"


def test_gzip_2024_dtd_four_records():
    records = papers("pubmed_2024dtd")
    assert [r.pmid for r in records] == ["36400559", "2930949", "11446611", "28786991"]
    back_pain, low_back, acute, review = records
    assert back_pain.doi == "10.1016/j.ncl.2022.07.002" and back_pain.pages == "61-76"
    assert low_back.doi is None and low_back.pmcid == "PMC1306303"
    assert acute.abstract is None
    assert (acute.year, acute.pub_date) == (2001, "2001 May-Jun")
    assert [(s.label, s.category) for s in review.abstract_sections] == [
        ("OBJECTIVE", "OBJECTIVE"),
        ("METHODS", "METHODS"),
        ("RESULTS", "RESULTS"),
        ("CONCLUSIONS", "CONCLUSIONS"),
    ]
    assert review.publication_types == ["Journal Article", "Meta-Analysis", "Review", "Systematic Review"]
    assert (review.year, review.pub_date) == (2017, "2017")
    # "6&#xa0;weeks": the no-break space is normalised like any other whitespace
    assert "persists for greater than 6 weeks" in back_pain.abstract


def test_legacy_medline_update_file_with_delete_citation():
    records = list(iter_records(fixture("medline16n0902")))
    found = [r for r in records if isinstance(r, Paper)]
    deletions = [r for r in records if isinstance(r, Deletion)]
    assert len(found) == 604
    assert deletions == [Deletion(pmid="26432306", version=1)]
    assert records[-1] == Deletion(pmid="26432306", version=1)
    assert all(p.kind == "article" and p.raw_xml.startswith(b"<MedlineCitation") for p in found)

    oct_dec = by_pmid(found, "26702167")
    assert oct_dec.title == "Insanity Defense: Past, Present, and Future."
    assert (oct_dec.year, oct_dec.pub_date) == (2015, "2015 Oct-Dec")
    assert sum(p.pub_date == "2015 Oct-Dec" for p in found) > 10
    assert (by_pmid(found, "18621939").year, by_pmid(found, "18621939").pub_date) == (2008, "2008 Jul-Aug")

    collectives = sorted(a.collective for p in found for a in p.authors if a.collective)
    assert len(collectives) == 8
    assert "ROBIS group" in collectives and "Gruppo Tecnico PASSI" in collectives

    assert by_pmid(found, "26702309").errata == ["26705261"]
    italian = by_pmid(found, "26407462")
    assert italian.languages == ["ita"]
    assert italian.vernacular_title == "I vaccini sono farmaci."
    # no PubmedData in this format: no entrez date, PMCID from OtherID
    first = found[0]
    assert first.pmid == "17942999" and first.pmcid == "PMC4380289"
    assert first.entrez_date is None
    assert [(s.label, s.category) for s in first.abstract_sections][0] == ("PURPOSE", "OBJECTIVE")
    statuses = {p.status for p in found}
    assert statuses == {"MEDLINE", "PubMed-not-MEDLINE", "In-Process", "In-Data-Review"}


def test_baseline_subset_medline_dates_and_collective():
    found = papers("pubmed21n1002")
    assert [p.pmid for p in found][:2] == ["31449448", "31449449"]
    assert (by_pmid(found, "31449475").year, by_pmid(found, "31449475").pub_date) == (2019, "2019 Oct-Dec")
    assert by_pmid(found, "31449474").pub_date == "2019 Sep-Oct"
    assert sum(p.pub_date == "2019 Sep/Oct" for p in found) == 1
    assert by_pmid(found, "31449468").authors[-1].collective == "AREN0532 and AREN0533 study committees"
    osprey = by_pmid(found, "31449449")
    assert osprey.title_markup == "Measurements of the radiographic cardiac silhouette of ospreys (<i>Pandion haliaetus</i>)."
    assert osprey.abstract_sections[1].label == "ANIMALS" and osprey.abstract_sections[1].category == "METHODS"


# --------------------------------------------------------------------------- whole-corpus properties


def _all_papers() -> list[Paper]:
    return [r for name in ALL_FIXTURES for r in iter_records(FIXTURES / name) if isinstance(r, Paper)]


def test_markup_holds_only_whitelisted_tags_and_strips_back_to_plain_text():
    tag = re.compile(r"</?([a-zA-Z][^ >/]*)[^>]*>")
    checked = 0
    for paper in _all_papers():
        pairs = [(paper.title_markup, paper.title)]
        pairs += [(s.markup, s.text) for s in paper.abstract_sections]
        if paper.abstract_markup is not None:
            pairs.append((paper.abstract_markup, paper.abstract))
        for markup, plain in pairs:
            assert {m.group(1) for m in tag.finditer(markup)} <= INLINE_TAGS, (paper.pmid, markup)
            stripped = html.unescape(tag.sub("", markup))
            assert " ".join(stripped.split()) == " ".join(plain.split()), paper.pmid
            checked += 1
    assert checked > 2000


def test_raw_xml_reparses_to_the_same_paper():
    everything = _all_papers()
    assert len(everything) == 674
    for paper in everything:
        again = parse_record(paper.raw_xml)
        assert again == paper, paper.pmid
        again_text = parse_record(paper.raw_xml.decode("utf-8"))
        assert again_text.content_hash == paper.content_hash


# --------------------------------------------------------------------------- sources


def test_sources_path_str_bytes_and_file_objects_agree():
    path = fixture("pubmed_2024dtd")
    raw = path.read_bytes()
    plain = gzip.decompress(raw)
    expected = [p.pmid for p in iter_records(path)]
    assert [p.pmid for p in iter_records(str(path))] == expected
    assert [p.pmid for p in iter_records(raw)] == expected  # gzip bytes
    assert [p.pmid for p in iter_records(plain)] == expected
    assert [p.pmid for p in iter_records(io.BytesIO(raw))] == expected
    assert [p.pmid for p in iter_records(io.BytesIO(plain))] == expected
    assert [p.pmid for p in parse_records(plain.decode("utf-8"))] == expected
    with open(path, "rb") as handle:
        assert [p.pmid for p in iter_records(handle)] == expected


def test_gzip_detected_by_content_when_the_name_does_not_say(tmp_path):
    target = tmp_path / "download.xml"
    target.write_bytes(fixture("pubmed_2024dtd").read_bytes())
    assert len(list(iter_records(target))) == 4


class _ReadOnly:
    """A bare object with only ``read`` (like some HTTP response streams)."""

    def __init__(self, data: bytes):
        self._stream = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)


def test_read_only_stream_without_peek():
    assert [p.pmid for p in iter_records(_ReadOnly(fixture("pubmed_2024dtd").read_bytes()))][0] == "36400559"
    assert len(list(iter_records(_ReadOnly(fixture_bytes("pubmed_12091962"))))) == 2


def test_unsupported_source_type_is_rejected():
    with pytest.raises(TypeError, match="path, bytes or a binary file"):
        list(iter_records(12345))


# --------------------------------------------------------------------------- bad documents


def test_truncated_document_raises_parse_error_after_complete_records():
    data = fixture_bytes("pubmed_2024dtd")
    cut = data[: int(len(data) * 0.6)]
    with pytest.raises(ParseError, match="malformed or truncated"):
        parse_records(cut)
    seen = []
    with pytest.raises(ParseError):
        for record in iter_records(cut):
            seen.append(record.pmid)
    assert seen and seen[0] == "36400559" and len(seen) < 4


def test_document_cut_right_after_a_record_still_fails():
    data = fixture_bytes("pubmed_12091962")
    end = data.index(b"</PubmedArticle>") + len(b"</PubmedArticle>")
    with pytest.raises(ParseError):
        parse_records(data[:end])


def test_html_error_page_raises_parse_error():
    page = b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1><br></body></html>"
    with pytest.raises(ParseError):
        parse_records(page)
    xhtml = b"<html><head><title>Service unavailable</title></head><body><p>Try again later.</p></body></html>"
    with pytest.raises(ParseError, match=r"unexpected root element <html>"):
        parse_records(xhtml)


def test_in_band_error_document_names_the_error():
    body = b'<?xml version="1.0"?><eFetchResult><ERROR>Cannot retrieve history data.</ERROR></eFetchResult>'
    with pytest.raises(ParseError, match=r"<eFetchResult>.*ERROR: Cannot retrieve history data"):
        parse_records(body)


def test_not_xml_and_empty_bodies_raise_parse_error():
    for body in (b"", b"   ", b"Service Temporarily Unavailable", b'{"error":"API rate limit exceeded","count":"11"}'):
        with pytest.raises(ParseError):
            parse_records(body)


def test_pubmed_records_under_a_foreign_root_are_refused():
    record = fixture_bytes("pubmed_27350240")
    start = record.index(b"<PubmedArticle>")
    end = record.rindex(b"</PubmedArticle>") + len(b"</PubmedArticle>")
    wrapped = b"<Envelope>" + record[start:end] + b"</Envelope>"
    with pytest.raises(ParseError, match=r"unexpected root element <Envelope>"):
        parse_records(wrapped)


def _article_xml(prefix: str) -> str:
    text = fixture_bytes(prefix).decode("utf-8")
    return text[text.index("<PubmedArticle>") : text.rindex("</PubmedArticle>") + len("</PubmedArticle>")]


def test_one_unreadable_record_becomes_bad_record_and_parsing_goes_on():
    good_first = _article_xml("pubmed_27350240")
    good_last = _article_xml("pubmed_35726897")
    no_pmid = re.sub(r'<PMID Version="1">\d+</PMID>', "", _article_xml("pubmed_33119379"), count=1)
    bad_pmid = re.sub(r'<PMID Version="1">\d+</PMID>', '<PMID Version="1">12a45</PMID>', _article_xml("pubmed_36789012"), count=1)
    bad_version = _article_xml("pubmed_38048813").replace('<PMID Version="1">38048813', '<PMID Version="one">38048813', 1)
    no_citation = "<PubmedArticle><PubmedData><PublicationStatus>ppublish</PublicationStatus></PubmedData></PubmedArticle>"
    document = (
        "<PubmedArticleSet>" + good_first + no_pmid + bad_pmid + bad_version + no_citation + good_last + "</PubmedArticleSet>"
    ).encode("utf-8")
    records = parse_records(document)
    assert [type(r).__name__ for r in records] == ["Paper", "BadRecord", "BadRecord", "BadRecord", "BadRecord", "Paper"]
    assert records[0].pmid == "27350240" and records[-1].pmid == "35726897"
    missing, letters, version, empty = records[1:5]
    assert missing.pmid is None and missing.error == "record has no PMID"
    assert b"Review of the Neurobehavioral Symptom Inventory." in missing.raw_xml
    assert letters.pmid == "12a45" and "not a number" in letters.error
    assert version.pmid == "38048813" and "ValueError" in version.error
    assert empty.pmid is None and "no MedlineCitation" in empty.error
    assert empty.raw_xml == no_citation.encode()


def test_bare_record_as_document_root():
    paper = parse_record(_article_xml("pubmed_36987902"))
    assert paper.pmid == "36987902" and paper.languages == ["eng", "nor"]
    with pytest.raises(ParseError, match="exactly one"):
        parse_record(fixture_bytes("pubmed_12091962"))


def test_delete_citation_in_current_format_set():
    document = (
        "<PubmedArticleSet>"
        + _article_xml("pubmed_27350240")
        + '<DeleteCitation><PMID Version="1">11111111</PMID><PMID Version="2">22222222</PMID></DeleteCitation>'
        + "</PubmedArticleSet>"
    ).encode()
    records = parse_records(document)
    assert records[0].pmid == "27350240"
    assert records[1:] == [Deletion("11111111", 1), Deletion("22222222", 2)]


def test_retraction_links_and_retracted_publication_type():
    article = _article_xml("pubmed_27350240")
    notice = (
        '<CommentsCorrectionsList><CommentsCorrections RefType="RetractionIn">'
        "<RefSource>Nature. 2017;540:1.</RefSource><PMID Version=\"1\">29000001</PMID></CommentsCorrections>"
        '<CommentsCorrections RefType="ErratumIn"><RefSource>Nature. 2016;536:2.</RefSource></CommentsCorrections>'
        "</CommentsCorrectionsList>"
    )
    retracted = article.replace("<MeshHeadingList>", notice + "<MeshHeadingList>", 1)
    paper = parse_record(retracted)
    assert paper.retracted_by == ["29000001"]
    assert paper.errata == ["Nature. 2016;536:2."]  # no PMID: the reference text stands in
    assert paper.is_retracted is True

    flagged = article.replace(
        '<PublicationType UI="D016428">Journal Article</PublicationType>',
        '<PublicationType UI="D016428">Journal Article</PublicationType>'
        '<PublicationType UI="D016441">Retracted Publication</PublicationType>',
        1,
    )
    paper = parse_record(flagged)
    assert paper.is_retracted is True and paper.retracted_by == []
    assert paper.publication_types == ["Journal Article", "Retracted Publication", "Comment"]

    notice_of = (
        '<CommentsCorrectionsList><CommentsCorrections RefType="RetractionOf">'
        '<RefSource>Nature. 2015;520:3.</RefSource><PMID Version="1">25000002</PMID>'
        "</CommentsCorrections></CommentsCorrectionsList>"
    )
    paper = parse_record(article.replace("<MeshHeadingList>", notice_of + "<MeshHeadingList>", 1))
    assert paper.retraction_of == ["25000002"]
    assert paper.is_retracted is False


def test_markup_escapes_text_and_drops_unknown_tags():
    article = _article_xml("pubmed_27350240")
    hostile = article.replace(
        "<ArticleTitle>Computational neuroscience: Species-specific motion detectors.</ArticleTitle>",
        '<ArticleTitle>&lt;script&gt;alert(1)&lt;/script&gt; <span onclick="x()">motion</span> '
        "<i>in <b>vivo</b></i> &amp; H<sub>2</sub>O<sup/></ArticleTitle>",
        1,
    )
    paper = parse_record(hostile)
    assert paper.title == "<script>alert(1)</script> motion in vivo & H2O"
    assert paper.title_markup == "&lt;script&gt;alert(1)&lt;/script&gt; motion <i>in <b>vivo</b></i> &amp; H<sub>2</sub>O"


def test_abstract_text_with_stray_whitespace_and_empty_section():
    article = _article_xml("pubmed_27350240")
    with_abstract = article.replace(
        "<Language>eng</Language>",
        '<Abstract><AbstractText Label=" AIMS ">  Two\n\n  lines\there. </AbstractText>'
        '<AbstractText Label="EMPTY"/><AbstractText>Unlabelled closing text.</AbstractText>'
        "<CopyrightInformation>© Somebody</CopyrightInformation></Abstract><Language>eng</Language>",
        1,
    )
    paper = parse_record(with_abstract)
    assert paper.abstract == "AIMS: Two lines here.\nUnlabelled closing text."
    assert [(s.label, s.text) for s in paper.abstract_sections] == [
        ("AIMS", "Two lines here."),
        ("EMPTY", ""),
        (None, "Unlabelled closing text."),
    ]


# --------------------------------------------------------------------------- MathML and small helpers

MML = 'xmlns:mml="http://www.w3.org/1998/Math/MathML"'


def _math(fragment: str, prefix: str = "mml") -> str:
    from lxml import etree

    xml = f"<mml:math {MML}>{fragment}</mml:math>" if prefix == "mml" else fragment
    return math_text(etree.fromstring(xml))


@pytest.mark.parametrize(
    "fragment, expected",
    [
        ("<mml:msup><mml:mi>x</mml:mi><mml:mn>2</mml:mn></mml:msup>", "x^2"),
        ("<mml:msub><mml:mi>C</mml:mi><mml:mtext>max</mml:mtext></mml:msub>", "C_max"),
        ("<mml:msup><mml:mi>e</mml:mi><mml:mrow><mml:mo>-</mml:mo><mml:mi>x</mml:mi></mml:mrow></mml:msup>", "e^(-x)"),
        ("<mml:mfrac><mml:mi>a</mml:mi><mml:mi>b</mml:mi></mml:mfrac>", "a/b"),
        (
            "<mml:mfrac><mml:mrow><mml:mi>a</mml:mi><mml:mo>+</mml:mo><mml:mn>1</mml:mn></mml:mrow>"
            "<mml:mn>2</mml:mn></mml:mfrac>",
            "(a+1)/2",
        ),
        ("<mml:msubsup><mml:mi>x</mml:mi><mml:mi>i</mml:mi><mml:mn>2</mml:mn></mml:msubsup>", "x_i^2"),
        ("<mml:msqrt><mml:mi>n</mml:mi></mml:msqrt>", "√n"),
        ("<mml:msqrt><mml:mi>n</mml:mi><mml:mo>-</mml:mo><mml:mn>1</mml:mn></mml:msqrt>", "√(n-1)"),
        ("<mml:mroot><mml:mi>x</mml:mi><mml:mn>3</mml:mn></mml:mroot>", "x^(1/3)"),
        (
            "<mml:munderover><mml:mo>∑</mml:mo><mml:mrow><mml:mi>i</mml:mi><mml:mo>=</mml:mo><mml:mn>1</mml:mn></mml:mrow>"
            "<mml:mi>n</mml:mi></mml:munderover>",
            "∑_(i=1)^n",
        ),
        ("<mml:mover><mml:mi>x</mml:mi><mml:mo>¯</mml:mo></mml:mover>", "x\u0304"),
        ("<mml:mover><mml:mi>AB</mml:mi><mml:mi>k</mml:mi></mml:mover>", "AB^k"),
        ("<mml:mfenced><mml:mi>a</mml:mi><mml:mi>b</mml:mi></mml:mfenced>", "(a,b)"),
        (
            "<mml:mmultiscripts><mml:mi>C</mml:mi><mml:mn>6</mml:mn><mml:none/><mml:mprescripts/>"
            "<mml:none/><mml:mn>14</mml:mn></mml:mmultiscripts>",
            "^14C_6",
        ),
        (
            "<mml:semantics><mml:mi>y</mml:mi><mml:annotation encoding='TeX'>y</mml:annotation></mml:semantics>",
            "y",
        ),
        ("<mml:mi>p</mml:mi><mml:mo>&lt;</mml:mo><mml:mn>0.05</mml:mn>", "p<0.05"),
        ("<mml:mi>n</mml:mi><mml:mspace/><mml:mo>=</mml:mo><mml:mtext> 12 </mml:mtext>", "n = 12"),
    ],
)
def test_mathml_linear_text(fragment, expected):
    assert _math(fragment) == expected


def test_mathml_default_namespace_and_other_prefix():
    default = '<math xmlns="http://www.w3.org/1998/Math/MathML"><msup><mi>r</mi><mn>2</mn></msup></math>'
    other = '<m:math xmlns:m="http://www.w3.org/1998/Math/MathML"><m:mfrac><m:mn>1</m:mn><m:mn>2</m:mn></m:mfrac></m:math>'
    assert _math(default, prefix=None) == "r^2"
    assert _math(other, prefix=None) == "1/2"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("https://orcid.org/0000-0002-4590-7461", "0000-0002-4590-7461"),
        ("http://orcid.org/0000000245907461", "0000-0002-4590-7461"),
        ("0000-0002-3282-232x", "0000-0002-3282-232X"),
        ("  0000-0001-7093-6988 ", "0000-0001-7093-6988"),
        ("", None),
        (None, None),
    ],
)
def test_orcid_forms(value, expected):
    assert normalise_orcid(value) == expected


def test_truncated_or_corrupt_gzip_raises_parse_error():
    data = fixture("pubmed_2024dtd").read_bytes()
    for broken in (data[: len(data) // 2], data[:-10], data[:100] + b"\x00" * 50 + data[150:]):
        with pytest.raises(ParseError, match="gzip-compressed PubMed XML is truncated or corrupt"):
            parse_records(broken)


def test_plain_xml_named_gz_is_read_as_plain(tmp_path):
    target = tmp_path / "mislabelled.xml.gz"
    target.write_bytes(fixture_bytes("pubmed_12091962"))
    assert [p.pmid for p in iter_records(target)] == ["12091962", "9997"]


def test_year_falls_back_to_medline_date_then_article_date():
    article = _article_xml("pubmed_36987902")
    ranged = re.sub(r"<PubDate>.*?</PubDate>", "<PubDate><MedlineDate>Winter 2022-2023</MedlineDate></PubDate>", article, flags=re.S)
    paper = parse_record(ranged)
    assert (paper.year, paper.pub_date) == (2022, "Winter 2022-2023")
    undated = re.sub(r"<PubDate>.*?</PubDate>", "<PubDate><MedlineDate>Spring</MedlineDate></PubDate>", article, flags=re.S)
    paper = parse_record(undated)
    assert (paper.year, paper.pub_date) == (2023, "Spring")  # year from ArticleDate 2023-03-27
    no_pub_date = re.sub(r"<PubDate>.*?</PubDate>", "", article, flags=re.S)
    paper = parse_record(no_pub_date)
    assert (paper.year, paper.pub_date) == (2023, "2023 Mar 27")


# --------------------------------------------------------------------------- raw records and unusual documents


def _fields(records) -> list[tuple]:
    """What a reader of the records sees, without the raw bytes (which may be re-serialised)."""
    return [
        (type(r).__name__, getattr(r, "pmid", None), getattr(r, "title", None), getattr(r, "abstract", None),
         getattr(r, "authors", None), getattr(r, "version", None))
        for r in records
    ]


def test_raw_xml_is_the_record_exactly_as_received():
    for name in ALL_FIXTURES:
        data = fixture_bytes(name)
        for record in iter_records(FIXTURES / name):
            if isinstance(record, Paper):
                assert record.raw_xml in data, (name, record.pmid)
                assert record.content_hash == content_hash(record.raw_xml)
    book = one("pubmed_20301577")
    assert b"GeneReviews<sup>&#xae;</sup>" in book.raw_xml  # character references are kept, not re-encoded
    assert book.journal == "GeneReviews®"


def _set(*parts: str, prolog: str = '<?xml version="1.0" encoding="UTF-8"?>\n') -> bytes:
    return (prolog + "<PubmedArticleSet>\n" + "\n".join(parts) + "\n</PubmedArticleSet>\n").encode("utf-8")


TWO = ("pubmed_27350240", "pubmed_36987902")


def test_end_tag_inside_a_comment_or_cdata_does_not_cut_the_record():
    first, second = (_article_xml(p) for p in TWO)
    plain = parse_records(_set(first, second))
    commented = first.replace("<MedlineCitation ", "<!-- a stray </PubmedArticle> --><MedlineCitation ", 1)
    in_cdata = first.replace("<MedlineCitation ", "<![CDATA[</PubmedArticle>]]><MedlineCitation ", 1)
    for variant in (commented, in_cdata):
        records = parse_records(_set(variant, second))
        assert _fields(records) == _fields(plain)


def test_comments_and_processing_instructions_between_records():
    first, second = (_article_xml(p) for p in TWO)
    document = _set(first, "<!-- next record -->", "<?pi data?>", second)
    assert [r.pmid for r in parse_records(document)] == ["27350240", "36987902"]
    stray_text = _set(first, "stray text", second)
    assert [r.pmid for r in parse_records(stray_text)] == ["27350240", "36987902"]
    trailing = _set(first, second) + b"<!-- after the root -->\n"
    assert [r.pmid for r in parse_records(trailing)] == ["27350240", "36987902"]
    with pytest.raises(ParseError, match="malformed or truncated"):
        parse_records(_set(first, second) + b"<PubmedArticle/>")


def test_non_utf8_document_is_read_and_raw_xml_is_utf8():
    first, second = (_article_xml(p) for p in TWO)
    document = _set(first, second, prolog='<?xml version="1.0" encoding="ISO-8859-1"?>\n')
    latin1 = document.decode("utf-8").encode("iso-8859-1")
    records = parse_records(latin1)
    assert _fields(records) == _fields(parse_records(_set(first, second)))
    assert records[1].authors[0].fore == "Øyvind"
    for record in records:
        record.raw_xml.decode("utf-8")  # re-serialised as UTF-8
        assert parse_record(record.raw_xml).pmid == record.pmid


def test_entity_reference_allowed_by_the_doctype_is_kept():
    first, second = (_article_xml(p) for p in TWO)
    prolog = ('<?xml version="1.0"?>\n<!DOCTYPE PubmedArticleSet'
              ' PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN"'
              ' "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n')
    with_entity = re.sub(r"(<ArticleTitle>)", r"\1Caf&eacute; ", first, count=1)
    records = parse_records(_set(with_entity, second, prolog=prolog))
    assert [r.pmid for r in records] == ["27350240", "36987902"]
    assert records[0].title.startswith("Café ")


def test_namespace_declared_on_the_root_reaches_the_records():
    first, second = (_article_xml(p) for p in TWO)
    math = '<mml:math><mml:msup><mml:mi>r</mml:mi><mml:mn>2</mml:mn></mml:msup></mml:math>'
    with_math = first.replace("<ArticleTitle>", f"<ArticleTitle>{math} ", 1)
    document = _set(with_math, second).replace(
        b"<PubmedArticleSet>", b'<PubmedArticleSet xmlns:mml="http://www.w3.org/1998/Math/MathML">', 1)
    records = parse_records(document)
    assert records[0].title.startswith("r^2 ")
    assert parse_record(records[0].raw_xml).title == records[0].title  # the raw record carries the declaration
    foreign = _set(first, second).replace(b"<PubmedArticleSet>", b'<PubmedArticleSet xmlns="urn:example">', 1)
    with pytest.raises(ParseError, match="unexpected root element"):
        parse_records(foreign)  # records in another namespace are not PubMed records


class _Trickle:
    """A stream that hands out a few bytes per read, so records straddle every refill."""

    def __init__(self, data: bytes, step: int):
        self._stream = io.BytesIO(data)
        self._step = step

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(min(self._step, size) if size and size > 0 else self._step)


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_records_split_across_reads(step):
    data = fixture_bytes("pubmed_2024dtd")
    expected = parse_records(data)
    got = list(iter_records(_Trickle(data, step)))
    assert got == expected
    deletion = _set(_article_xml("pubmed_27350240"), '<DeleteCitation><PMID Version="1">1</PMID></DeleteCitation>')
    assert list(iter_records(_Trickle(deletion, step)))[1:] == [Deletion("1", 1)]
