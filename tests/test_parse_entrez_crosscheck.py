"""Cross-check the streaming parser against Biopython's Bio.Entrez on every fixture it can read offline.

Bio.Entrez validates documents against their DTD and downloads a DTD it does
not bundle. The test never allows that: a fixture is cross-checked only when
its DTD file ships inside Biopython, and ``urlopen`` in ``Bio.Entrez.Parser``
is replaced by a function that fails, so a network attempt is a test failure.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from pathlib import Path

import pytest

Entrez = pytest.importorskip("Bio.Entrez")
EntrezParser = pytest.importorskip("Bio.Entrez.Parser")

from atlas.models import Paper  # noqa: E402
from atlas.pubmed.parse import iter_records  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "pubmed"
BUNDLED_DTDS = Path(EntrezParser.__file__).parent / "DTDs"
_DOCTYPE_SYSTEM = re.compile(rb'<!DOCTYPE\s+\w+\s+(?:PUBLIC\s+"[^"]*"\s+|SYSTEM\s+)"([^"]+)"')
_INLINE_TAG = re.compile(r"</?(?:i|b|u|sup|sub)\b[^>]*>")
_MATH_BLOCK = re.compile(r"<math\b.*?</math>", re.DOTALL)


def _document(path: Path) -> bytes:
    data = path.read_bytes()
    data = gzip.decompress(data) if path.name.endswith(".gz") else data
    # One fixture was re-serialised by its collectors with an http:// DTD URL, which Biopython
    # refuses on security grounds; the https form names the same (bundled) DTD file.
    return data.replace(b'SYSTEM "http://dtd.nlm.nih.gov/', b'SYSTEM "https://dtd.nlm.nih.gov/', 1)


def _dtd_name(data: bytes) -> str | None:
    match = _DOCTYPE_SYSTEM.search(data[:2000])
    return os.path.basename(match.group(1).decode()) if match else None


def _cases() -> list:
    cases = []
    for path in sorted(FIXTURES.iterdir()):
        dtd = _dtd_name(_document(path))
        marks = []
        if dtd is None or not (BUNDLED_DTDS / dtd).exists():
            marks.append(
                pytest.mark.skip(
                    reason=f"Biopython {EntrezParser.__name__} does not bundle {dtd}; "
                    "Bio.Entrez would download it, and tests stay offline"
                )
            )
        cases.append(pytest.param(path, id=path.name, marks=marks))
    return cases


CASES = _cases()


def test_most_fixtures_are_cross_checked():
    runnable = [c for c in CASES if not c.marks]
    assert len(runnable) >= len(CASES) - 1, "at most the legacy 2016 MEDLINE file may be skipped"


@pytest.fixture
def offline_entrez(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"Bio.Entrez tried to download {url}")

    monkeypatch.setattr(EntrezParser, "urlopen", refuse)
    return Entrez


def _entrez_text(value) -> str:
    """Bio.Entrez keeps inline tags and MathML verbatim inside strings: drop the tags, collapse spaces."""
    return " ".join(_INLINE_TAG.sub("", str(value)).split())


def _assert_same_text(ours: str, theirs_raw: str, where: str) -> None:
    if "<math" not in theirs_raw:
        assert ours == _entrez_text(theirs_raw), where
        return
    # Our MathML is linear text (V̇O_2max); Biopython keeps the markup. Every non-math stretch
    # of their text must appear, in order, in ours.
    position = 0
    for segment in _MATH_BLOCK.split(theirs_raw):
        segment = _entrez_text(segment)
        if not segment:
            continue
        found = ours.find(segment, position)
        assert found >= 0, f"{where}: {segment[:80]!r} missing after offset {position}"
        position = found + len(segment)


def _entrez_records(entrez, data: bytes) -> list[tuple[str, dict]]:
    parsed = entrez.read(io.BytesIO(data))
    records = []
    for article in parsed["PubmedArticle"]:
        records.append(("article", article))
    for book in parsed["PubmedBookArticle"]:
        records.append(("book", book))
    return records


def _valid_authors(author_list) -> int:
    return sum(1 for author in author_list if author.attributes.get("ValidYN") != "N")


@pytest.mark.parametrize("path", CASES)
def test_parser_agrees_with_bio_entrez(path, offline_entrez):
    data = _document(path)
    ours = {p.pmid: p for p in iter_records(data) if isinstance(p, Paper)}
    theirs = _entrez_records(offline_entrez, data)
    assert len(theirs) == len(ours)
    for kind, record in theirs:
        if kind == "article":
            citation = record["MedlineCitation"]
            article = citation["Article"]
            pmid = str(citation["PMID"])
            author_count = _valid_authors(article.get("AuthorList", []))
        else:
            citation = article = record["BookDocument"]
            pmid = str(citation["PMID"])
            chapter_lists = [a for a in article.get("AuthorList", []) if a.attributes.get("Type") in (None, "authors")]
            author_count = _valid_authors(chapter_lists[0]) if chapter_lists else 0
        paper = ours[pmid]
        assert paper.kind == kind
        assert paper.pmid == pmid
        assert paper.version == int(citation["PMID"].attributes.get("Version", 1))
        _assert_same_text(paper.title, str(article["ArticleTitle"]), f"{pmid} title")
        assert len(paper.authors) == author_count, pmid

        sections = list(article["Abstract"]["AbstractText"]) if "Abstract" in article else []
        sections = [s for s in sections if _entrez_text(s)]
        assert len([s for s in paper.abstract_sections if s.text]) == len(sections), pmid
        ours_sections = [s for s in paper.abstract_sections if s.text]
        for mine, theirs_section in zip(ours_sections, sections):
            assert mine.label == theirs_section.attributes.get("Label"), pmid
            assert mine.category == theirs_section.attributes.get("NlmCategory"), pmid
            _assert_same_text(mine.text, str(theirs_section), f"{pmid} abstract section {mine.label}")
        if sections:
            paragraphs = []
            for section in sections:
                label = section.attributes.get("Label")
                text = _entrez_text(section)
                paragraphs.append(f"{label}: {text}" if label else text)
            if not any("<math" in str(s) for s in sections):
                assert paper.abstract == "\n".join(paragraphs), pmid
            else:
                _assert_same_text(paper.abstract, " ".join(str(s) for s in sections), f"{pmid} abstract")
        else:
            assert paper.abstract is None, pmid

        if kind == "article":
            languages = [str(x) for x in article.get("Language", [])]
            assert paper.languages == languages, pmid
            types = [str(x) for x in article.get("PublicationTypeList", [])]
            assert paper.publication_types == types, pmid
            mesh = [str(h["DescriptorName"]) for h in citation.get("MeshHeadingList", [])]
            assert paper.mesh_terms == mesh, pmid
            if "VernacularTitle" in article:
                _assert_same_text(paper.vernacular_title or "", str(article["VernacularTitle"]), f"{pmid} vernacular")
            ids = {str(i.attributes.get("IdType")): str(i) for i in record["PubmedData"].get("ArticleIdList", [])}
            assert paper.pmcid == ids.get("pmc"), pmid
            if "doi" in ids:
                assert paper.doi == ids["doi"], pmid
