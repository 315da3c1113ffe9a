"""Citations: NLM text, BibTeX keys and entries, RIS, over tricky real and edge-case rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from atlas.citations import (
    ascii_fold,
    bibtex_escape,
    bibtex_key,
    citations_for,
    format_citation,
    normalise_doi,
    split_pages,
    to_bibtex,
    to_ris,
    unique_keys,
)
from atlas.models import Paper
from atlas.pubmed.parse import parse_records

FIXTURES = Path(__file__).parent / "fixtures"
ROWS = {row["pmid"]: row for row in json.loads((FIXTURES / "pages" / "evidence_rows.json").read_text("utf-8"))}
DOUBLED = re.compile(r"\.\s*\.|\?\s*\.|!\s*\.|,\s*,|;\s*;|:\s*:|;\s*:|\(\)|\s[.,;:]")


def parsed(name: str) -> dict:
    """A real PubMed record through the real parser, as the plain dict the store keeps."""
    records = [r for r in parse_records((FIXTURES / "pubmed" / name).read_bytes()) if isinstance(r, Paper)]
    return records[0].to_json()


def all_parsed_papers() -> list[dict]:
    papers = []
    for path in sorted((FIXTURES / "pubmed").glob("*.xml")):
        papers += [r.to_json() for r in parse_records(path.read_bytes()) if isinstance(r, Paper)]
    return papers


def braces_balanced(text: str) -> bool:
    depth = 0
    for match in re.finditer(r"\\.|[{}]", text):
        token = match.group(0)
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def bibtex_fields(entry: str) -> dict[str, str]:
    """Fields of one entry written as ``  name = {value},`` lines (the form to_bibtex emits)."""
    return dict(re.findall(r"^  (\w+) = \{(.*)\},?$", entry, re.M))


# ---------------------------------------------------------------- text citation


def test_citation_collective_group_dotted_abbreviation_and_shortened_pages():
    row = parsed("pubmed_23435529_rct_structured_collectivename.xml")
    assert format_citation(row) == (
        "Fossella F, Pereira JR, von Pawel J, Pluzanska A, Gorbounova V, Kaukel E, et al. "
        "Randomized phase III trial of docetaxel versus vinorelbine, both combined with cisplatin, as "
        "first-line therapy for advanced non-small-cell lung cancer: the TAX 325 study group. "
        "J Clin Oncol. 2013;31(10):1207-13. doi:10.1200/JCO.2012.44.6112. PMID: 23435529."
    )


def test_citation_bracketed_translated_title_keeps_one_full_stop():
    row = parsed("pubmed_25760099_german_vernaculartitle_bracket_title_b_tag.xml")
    assert format_citation(row) == (
        "Götze R. [Market Concentration in the Statutory Health Insurance of Germany since the "
        "Introduction of Free Choice of Sickness Funds]. Gesundheitswesen. 2016;78(11):715-720. "
        "doi:10.1055/s-0034-1396891. PMID: 25760099."
    )


def test_citation_bracket_title_without_full_stop_gets_one():
    row = {"pmid": "1", "title": "[A Broader Scope]", "journal_abbrev": "Psychother Psychosom Med Psychol", "year": 2023}
    assert format_citation(row) == "[A Broader Scope]. Psychother Psychosom Med Psychol. 2023. PMID: 1."


def test_citation_question_title_and_no_issue():
    row = parsed("pubmed_30108519_mathml_in_abstract_pubmed_not_medline.xml")
    citation = format_citation(row)
    assert "Back to the Old Days? Front Physiol. 2018;9:1034. doi:10.3389/fphys.2018.01034. PMID: 30108519." in citation
    assert "?." not in citation


def test_citation_non_ascii_authors_missing_pages_and_et_al():
    row = parsed("pubmed_36987902_norwegian_vernacular_nonascii_multilanguage.xml")
    assert format_citation(row) == (
        "Bruserud Ø, Arnes K, Kjørsvik CR, Brekke RL, Almeland SK, Guttormsen AB, et al. Patients over 75 "
        "years admitted to the National Burn Centre, Haukeland University Hospital, 2000-19. "
        "Tidsskr Nor Laegeforen. 2023;143(5). doi:10.4045/tidsskr.22.0358. PMID: 36987902."
    )


def test_citation_six_authors_are_all_listed():
    row = {"pmid": "2", "title": "T", "authors": [{"last": f"Name{i}", "initials": "A"} for i in range(6)]}
    citation = format_citation(row)
    assert citation.startswith("Name0 A, Name1 A, Name2 A, Name3 A, Name4 A, Name5 A. T.")
    assert "et al" not in citation
    row["authors"].append({"last": "Name6", "fore": "Jean-Paul"})
    assert format_citation(row).startswith("Name0 A, Name1 A, Name2 A, Name3 A, Name4 A, Name5 A, et al. T.")


def test_citation_initials_derived_from_fore_names_when_missing():
    row = {"pmid": "3", "title": "T.", "authors": [{"last": "Dupont", "fore": "Jean-Paul Marie"}]}
    assert format_citation(row) == "Dupont JPM. T. PMID: 3."


def test_citation_without_authors_starts_with_title():
    row = {"pmid": "4", "title": "Chronic fatigue syndrome.", "journal": "Lancet", "year": 1990}
    assert format_citation(row) == "Chronic fatigue syndrome. Lancet. 1990. PMID: 4."


def test_citation_collective_only():
    row = {"pmid": "5", "title": "Guideline", "authors": [{"collective": "NICE Guideline Committee"}]}
    assert format_citation(row) == "NICE Guideline Committee. Guideline. PMID: 5."


def test_a_collective_name_ending_in_a_full_stop_is_not_punctuated_twice():
    row = {"pmid": "6", "title": "Guideline", "authors": [{"collective": "The NICE Guideline Committee."},
                                                           {"last": "Smith", "fore": "Anna"}]}
    assert format_citation(row) == "The NICE Guideline Committee, Smith A. Guideline. PMID: 6."


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"year": 2016, "volume": "78", "issue": "11", "pages": "715-720"}, "J. 2016;78(11):715-720."),
        ({"year": 2016, "volume": "78"}, "J. 2016;78."),
        ({"year": 2016, "issue": "11"}, "J. 2016;(11)."),
        ({"year": 2023, "pages": "1-20"}, "J. 2023:1-20."),
        ({"year": 2023}, "J. 2023."),
        ({"volume": "5", "pages": "12"}, "J. 5:12."),
        ({"pages": "e100"}, "J. e100."),
        ({}, "J."),
    ],
)
def test_citation_source_details_without_stray_separators(fields, expected):
    row = {"pmid": "6", "title": "Title.", "journal_abbrev": "J", **fields}
    assert format_citation(row) == f"Title. {expected} PMID: 6."


def test_citation_titles_ending_in_quotes_exclamations_and_whitespace():
    assert format_citation({"pmid": "7", "title": 'They said "rest."'}) == 'They said "rest." PMID: 7.'
    assert format_citation({"pmid": "7", "title": "Move less!"}) == "Move less! PMID: 7."
    flattened_mathml = "Effect of\n  x\n  =\n  2 on lactate\n"
    assert format_citation({"pmid": "7", "title": flattened_mathml}) == "Effect of x = 2 on lactate. PMID: 7."


def test_citation_journal_abbreviation_with_periods_and_full_name_fallback():
    base = {"pmid": "8", "title": "T.", "year": 2001}
    # NLM's own MedlineTA for this journal is "Proc Natl Acad Sci U S A".
    assert "Proc Natl Acad Sci U S A. 2001." in format_citation({**base, "journal_abbrev": "Proc. Natl. Acad. Sci. U.S.A."})
    assert "Journal of Things. 2001." in format_citation({**base, "journal": "Journal of Things"})
    assert "Journal of Things (London). 2001." in format_citation({**base, "journal": "Journal of Things (London)."})


def test_citation_doi_forms_are_normalised_and_non_dois_dropped():
    base = {"pmid": "9", "title": "T."}
    assert format_citation({**base, "doi": "https://doi.org/10.1/ABC"}) == "T. doi:10.1/ABC. PMID: 9."
    assert format_citation({**base, "doi": "doi: 10.1/abc"}) == "T. doi:10.1/abc. PMID: 9."
    assert format_citation({**base, "doi": "not-a-doi"}) == "T. PMID: 9."


def test_no_doubled_punctuation_for_any_real_record():
    papers = all_parsed_papers()
    assert len(papers) >= 20
    for paper in papers:
        citation = format_citation(paper)
        assert not DOUBLED.search(citation), citation
        assert citation.endswith(f"PMID: {paper['pmid']}.")


# ---------------------------------------------------------------- keys


def test_key_transliterates_and_skips_stopwords():
    assert bibtex_key(parsed("pubmed_25760099_german_vernaculartitle_bracket_title_b_tag.xml")) == (
        "gotze-2016-market-concentration"
    )
    assert bibtex_key(parsed("pubmed_36987902_norwegian_vernacular_nonascii_multilanguage.xml")) == (
        "bruserud-2023-patients-75"
    )
    row = {"pmid": "1", "title": "The role of the immune system in ME/CFS", "year": 2020, "authors": [{"last": "Kjørsvik"}]}
    assert bibtex_key(row) == "kjorsvik-2020-role-immune"
    row = {"pmid": "1", "title": "A study of fatigue", "year": 1999, "authors": [{"last": "Straße-Åæß"}]}
    assert bibtex_key(row) == "strasseaaess-1999-study-fatigue"


def test_key_collective_unknown_author_and_unknown_year():
    row = {"pmid": "1", "title": "Guideline on ME/CFS", "year": 2021, "authors": [{"collective": "The TAX 325 Study Group"}]}
    assert bibtex_key(row) == "tax-2021-guideline-me"
    assert bibtex_key({"pmid": "1", "title": "Of the and", "authors": []}) == "anon-nd"
    assert bibtex_key({"pmid": "1", "title": "Fatigue", "year": "2019 Nov"}) == "anon-nd-fatigue"


def test_ascii_fold():
    assert ascii_fold("Øyvind Kjørsvik Götze Straße Łukasz Þór Æsa") == "Oyvind Kjorsvik Gotze Strasse Lukasz THor AEsa"


def test_keys_of_real_records_are_lowercase_ascii():
    for paper in all_parsed_papers():
        assert re.fullmatch(r"[a-z0-9]+-(\d{4}|nd)(-[a-z0-9]+){0,2}", bibtex_key(paper)), paper["pmid"]


def test_unique_keys_lowest_pmid_keeps_the_bare_key():
    def row(pmid, title="Fatigue study"):
        return {"pmid": pmid, "title": title, "year": 2020, "authors": [{"last": "Smith"}]}

    rows = [row("300"), row("100"), row("2000"), {"pmid": "5", "title": "Other", "year": 2020, "authors": [{"last": "Lee"}]}]
    assert unique_keys(rows) == [
        "smith-2020-fatigue-study-b",
        "smith-2020-fatigue-study",
        "smith-2020-fatigue-study-c",
        "lee-2020-other",
    ]


def test_unique_keys_never_reuse_a_genuine_key():
    def row(pmid, title):
        return {"pmid": pmid, "title": title, "year": 2020, "authors": [{"last": "Smith"}]}

    rows = [row("1", "Fatigue"), row("2", "Fatigue"), row("3", "Fatigue b")]
    assert unique_keys(rows) == ["smith-2020-fatigue", "smith-2020-fatigue-c", "smith-2020-fatigue-b"]


def test_unique_keys_run_past_z():
    rows = [{"pmid": str(p), "title": "Same", "year": 2020} for p in range(1, 30)]
    keys = unique_keys(rows)
    assert len(set(keys)) == 29
    assert keys[:2] == ["anon-2020-same", "anon-2020-same-b"]
    assert keys[25:28] == ["anon-2020-same-z", "anon-2020-same-aa", "anon-2020-same-ab"]


def test_citations_for_gives_unique_keys_across_a_set():
    rows = [{"pmid": str(p), "title": "Same title", "year": 2020, "authors": [{"last": "Same"}]} for p in (3, 1, 2)]
    keys = [key for key, *_ in citations_for(rows)]
    assert keys == ["same-2020-same-title-c", "same-2020-same-title", "same-2020-same-title-b"]


# ---------------------------------------------------------------- BibTeX


def test_bibtex_collective_pages_capitals_and_note():
    row = parsed("pubmed_23435529_rct_structured_collectivename.xml")
    entry = to_bibtex(row, bibtex_key(row))
    assert entry.startswith("@article{fossella-2013-randomized-phase,\n")
    fields = bibtex_fields(entry)
    assert fields["author"].startswith("Fossella, Frank and Pereira, Jose R and von Pawel, Joachim and ")
    assert fields["author"].endswith(" and {TAX 325 Study Group}")
    assert fields["title"].startswith("Randomized phase {III} trial")
    assert "the {TAX} 325 study group." in fields["title"]
    assert fields["pages"] == "1207--1213"
    assert fields["number"] == "10" and fields["volume"] == "31" and fields["year"] == "2013"
    assert fields["doi"] == "10.1200/JCO.2012.44.6112"
    assert fields["note"] == "PMID: 23435529"
    assert fields["journal"].startswith("Journal of clinical oncology")
    assert braces_balanced(entry)


def test_bibtex_protects_acronyms_and_proper_nouns_but_not_the_first_word():
    row = {"pmid": "1", "title": "Post-exertional malaise in ME/CFS (Norway): COVID-19 and Long COVID.", "year": 2024}
    title = bibtex_fields(to_bibtex(row, "k"))["title"]
    assert title == "Post-exertional malaise in {ME/CFS} ({Norway}): {COVID-19} and {Long} {COVID}."
    assert bibtex_fields(to_bibtex({"pmid": "1", "title": "COVID-19 in Oslo"}, "k"))["title"] == "{COVID-19} in {Oslo}"


def test_bibtex_escapes_every_special_character():
    assert bibtex_escape(r"& % $ # _ { } ~ ^ \ ") == (
        r"\& \% \$ \# \_ \{ \} \textasciitilde{} \textasciicircum{} \textbackslash{} "
    )
    row = {
        "pmid": "1",
        "title": "50% of R&D costs $5 #1 in a_b {x} ~ ^ \\ test",
        "authors": [{"collective": "The {Hostile} & Co_op Group"}, {"last": "Smith, Jr", "fore": "A"}],
        "journal": "J & J",
    }
    entry = to_bibtex(row, "anon-nd-r-d")
    fields = bibtex_fields(entry)
    assert fields["title"] == (
        r"50\% of {R\&D} costs \$5 \#1 in a\_b \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} test"
    )
    assert fields["author"] == r"{The \{Hostile\} \& Co\_op Group} and {Smith, Jr}, A"
    assert fields["journal"] == r"J \& J"
    assert braces_balanced(entry)


def test_bibtex_non_ascii_names_kept_and_initials_fallback():
    row = parsed("pubmed_36987902_norwegian_vernacular_nonascii_multilanguage.xml")
    fields = bibtex_fields(to_bibtex(row, "k"))
    assert fields["author"].startswith("Bruserud, Øyvind and Arnes, Kaja and Kjørsvik, Camilla Rygg")
    assert "pages" not in fields
    only_initials = {"pmid": "1", "title": "T", "authors": [{"last": "Götze", "initials": "CR"}]}
    assert bibtex_fields(to_bibtex(only_initials, "k"))["author"] == "Götze, C. R."


def test_bibtex_without_authors_or_optional_fields():
    entry = to_bibtex({"pmid": "42", "title": "Untitled note"}, "anon-nd-untitled-note")
    assert entry == "@article{anon-nd-untitled-note,\n  title = {Untitled note},\n  note = {PMID: 42}\n}\n"


def test_bibtex_rejects_unusable_keys():
    with pytest.raises(ValueError, match="BibTeX key"):
        to_bibtex({"pmid": "1", "title": "T"}, "bad key,}")


def test_bibtex_of_every_real_record_is_balanced():
    papers = all_parsed_papers()
    for paper, key in zip(papers, unique_keys(papers), strict=True):
        entry = to_bibtex(paper, key)
        assert braces_balanced(entry), entry
        assert bibtex_fields(entry)["title"]


# ---------------------------------------------------------------- RIS


def test_ris_record_fields_and_order():
    row = parsed("pubmed_23435529_rct_structured_collectivename.xml")
    lines = to_ris(row).splitlines()
    assert lines[0] == "TY  - JOUR"
    assert lines[-1] == "ER  - "
    authors = [line[6:] for line in lines if line.startswith("AU  - ")]
    assert authors[:3] == ["Fossella, Frank", "Pereira, Jose R", "von Pawel, Joachim"]
    assert authors[-1] == "TAX 325 Study Group"
    tags = dict(line.split("  - ", 1) for line in lines if not line.startswith(("AU", "ER")))
    assert tags["SP"] == "1207" and tags["EP"] == "1213"
    assert tags["JO"] == "J. Clin. Oncol."
    assert tags["T2"].startswith("Journal of clinical oncology")
    assert tags["PY"] == "2013" and tags["VL"] == "31" and tags["IS"] == "10"
    assert tags["DO"] == "10.1200/JCO.2012.44.6112"
    assert tags["AN"] == "23435529"
    assert tags["UR"] == "https://pubmed.ncbi.nlm.nih.gov/23435529/"


def test_ris_skips_missing_fields_and_keeps_one_line_per_tag():
    row = {"pmid": "10", "title": "Line one\nline two", "authors": [{"last": "Øvrebø", "fore": "Åse"}]}
    assert to_ris(row) == (
        "TY  - JOUR\nAU  - Øvrebø, Åse\nTI  - Line one line two\nAN  - 10\nDB  - PubMed\n"
        "UR  - https://pubmed.ncbi.nlm.nih.gov/10/\nER  - \n"
    )


def test_ris_of_every_real_record_is_well_formed():
    for paper in all_parsed_papers():
        lines = to_ris(paper).splitlines()
        assert lines[0] == "TY  - JOUR" and lines[-1] == "ER  - "
        for line in lines[1:-1]:
            assert re.fullmatch(r"[A-Z][A-Z0-9]  - \S.*", line), line


# ---------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    ("pages", "expected"),
    [
        ("1207-13", ("1207", "1213")),
        ("715-720", ("715", "720")),
        ("45-6", ("45", "46")),
        ("e100", ("e100", "")),
        ("S1-S5", ("S1", "S5")),
        ("12-4, 18", ("12", "14")),
        ("026002", ("026002", "")),
        (None, ("", "")),
        ("", ("", "")),
    ],
)
def test_split_pages(pages, expected):
    assert split_pages(pages) == expected


@pytest.mark.parametrize(
    ("doi", "expected"),
    [
        ("10.1/x", "10.1/x"),
        (" https://dx.doi.org/10.1/x ", "10.1/x"),
        ("DOI:10.1/x", "10.1/x"),
        ("pii-123", ""),
        (None, ""),
    ],
)
def test_normalise_doi(doi, expected):
    assert normalise_doi(doi) == expected


def test_fixture_rows_cover_the_tricky_cases():
    """The shared page fixtures carry what the citation rules are about."""
    hostile = ROWS["99000001"]
    assert "<script>" in hostile["title"] and hostile["authors"][-1].get("collective")
    assert DOUBLED.search(format_citation(hostile)) is None
