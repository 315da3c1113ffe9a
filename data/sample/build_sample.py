"""Rebuild the bundled demo corpus (PubMed XML) from public record text.

``records.jsonl`` holds real ME/CFS records (PMID, title, abstract, authors,
journal, year) copied from public pages; no PubMed XML was available for them,
so this script writes each one as a ``PubmedArticle`` in the shape efetch
returns. Entrez dates are spread over twelve weeks so that successive nightly
windows pick up different papers.

    python data/sample/build_sample.py            # writes data/sample/pubmed/
"""

from __future__ import annotations

import json
import re
import sys
from datetime import date, timedelta
from pathlib import Path
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
FIRST_ENTREZ_DATE = date(2025, 8, 4)
WEEKS = 12
INLINE_TAG = re.compile(r"(</?(?:i|b|u|sup|sub)>)")


def inline_xml(text: str) -> str:
    """Escape text but keep PubMed's inline tags (<i>, <sup>, ...) as elements."""
    return "".join(part if INLINE_TAG.fullmatch(part) else escape(part) for part in INLINE_TAG.split(text))


def entrez_date(index: int, total: int) -> date:
    return FIRST_ENTREZ_DATE + timedelta(days=(index * WEEKS * 7) // max(total, 1))


def author_xml(author: dict) -> str:
    if "collective" in author:
        name = author["collective"]
        return f"<Author ValidYN=\"Y\"><CollectiveName>{escape(name)}</CollectiveName></Author>" if name else ""
    parts = [f"<LastName>{escape(author['last'])}</LastName>"]
    if author.get("fore"):
        parts.append(f"<ForeName>{escape(author['fore'])}</ForeName>")
    if author.get("initials"):
        parts.append(f"<Initials>{escape(author['initials'])}</Initials>")
    return "<Author ValidYN=\"Y\">" + "".join(parts) + "</Author>"


def date_xml(tag: str, day: date, attrs: str = "") -> str:
    return f"<{tag}{attrs}><Year>{day.year}</Year><Month>{day.month:02d}</Month><Day>{day.day:02d}</Day></{tag}>"


def article_xml(record: dict, added: date) -> str:
    authors = "".join(author_xml(a) for a in record["authors"])
    journal = f"<Title>{escape(record['journal'])}</Title>" if record.get("journal") else ""  # never invented
    year = record.get("year")
    pub_date = f"<PubDate><Year>{year}</Year></PubDate>" if year else "<PubDate><MedlineDate>unknown</MedlineDate></PubDate>"
    abstract = (
        f"<Abstract><AbstractText>{inline_xml(record['abstract'])}</AbstractText></Abstract>"
        if record.get("abstract")
        else ""
    )
    types = record.get("publication_types") or ["Journal Article"]
    type_xml = "".join(f"<PublicationType>{escape(t)}</PublicationType>" for t in types)
    language = f"<Language>{record['language']}</Language>" if record.get("language") else ""
    doi = record.get("doi")
    elocation = f'<ELocationID EIdType="doi" ValidYN="Y">{escape(doi)}</ELocationID>' if doi else ""
    ids = [f'<ArticleId IdType="pubmed">{record["pmid"]}</ArticleId>']
    if doi:
        ids.append(f'<ArticleId IdType="doi">{escape(doi)}</ArticleId>')
    if record.get("pmcid"):
        ids.append(f'<ArticleId IdType="pmc">{escape(record["pmcid"])}</ArticleId>')
    author_list = f'<AuthorList CompleteYN="Y">{authors}</AuthorList>' if authors else ""
    entrez, pubmed = ' PubStatus="entrez"', ' PubStatus="pubmed"'
    return (
        "<PubmedArticle>"
        f'<MedlineCitation Status="PubMed-not-MEDLINE" Owner="NLM"><PMID Version="1">{record["pmid"]}</PMID>'
        f"{date_xml('DateRevised', added)}"
        '<Article PubModel="Print">'
        f"<Journal><JournalIssue CitedMedium=\"Internet\">{pub_date}</JournalIssue>{journal}</Journal>"
        f"<ArticleTitle>{inline_xml(record['title'])}</ArticleTitle>{elocation}{abstract}"
        f"{author_list}"
        f"{language}<PublicationTypeList>{type_xml}</PublicationTypeList>"
        "</Article></MedlineCitation>"
        "<PubmedData><History>"
        f"{date_xml('PubMedPubDate', added, entrez)}{date_xml('PubMedPubDate', added, pubmed)}"
        "</History><PublicationStatus>ppublish</PublicationStatus>"
        f"<ArticleIdList>{''.join(ids)}</ArticleIdList></PubmedData>"
        "</PubmedArticle>"
    )


def build(source: Path, out_dir: Path) -> int:
    records = [json.loads(line) for line in source.read_text("utf-8").splitlines() if line.strip()]
    records.sort(key=lambda r: int(r["pmid"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.xml"):
        old.unlink()
    by_week: dict[int, list[str]] = {}
    for index, record in enumerate(records):
        added = entrez_date(index, len(records))
        week = (added - FIRST_ENTREZ_DATE).days // 7
        by_week.setdefault(week, []).append(article_xml(record, added))
    for week, articles in sorted(by_week.items()):
        start = FIRST_ENTREZ_DATE + timedelta(weeks=week)
        body = "\n".join(articles)
        (out_dir / f"week_{start.isoformat()}.xml").write_text(
            '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, '
            '1st January 2025//EN" "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">\n'
            f"<PubmedArticleSet>\n{body}\n</PubmedArticleSet>\n",
            "utf-8",
        )
    return len(records)


if __name__ == "__main__":
    count = build(HERE / "records.jsonl", HERE / "pubmed")
    print(f"wrote {count} records to {HERE / 'pubmed'}", file=sys.stderr)
