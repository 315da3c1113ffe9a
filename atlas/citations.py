"""Citations for one paper: a Vancouver/NLM text citation, BibTeX and RIS.

Pure functions over plain fields (a mapping such as an ``evidence`` view row, or
any object with the same attributes), so they work for pages, exports and the
CLI alike without depending on ``Paper`` or the store.

Conventions, chosen once and kept:

* Text citation follows the NLM/ICMJE (Vancouver) form
  ``Surname AB, Surname CD, et al. Title. Journal. Year;Vol(Issue):Pages. doi:X. PMID: N.``
  listing the first six authors then "et al." (ICMJE's rule), the journal's
  abbreviation without periods as NLM prints it, and no doubled punctuation.
* BibTeX and RIS keep every author and keep UTF-8 text: current reference
  managers and biber read it, and transliterating names loses information.
* BibTeX keys are ``<surname>-<year>-<word>-<word>`` in lowercase ASCII;
  ``unique_keys`` settles collisions within one page set.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAX_CITED_AUTHORS = 6

# Letters NFKD does not decompose into ASCII.
_TRANSLITERATION = str.maketrans(
    {
        "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "ß": "ss", "ẞ": "SS", "œ": "oe", "Œ": "OE",
        "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "TH",
        "ı": "i", "ħ": "h", "Ħ": "H",
    }
)

KEY_STOPWORDS = frozenset(
    """a an the of in on and or for with to from by at as into onto via vs versus is are was
    were be been its their his her our this that these those than after before between during
    among within without about over under per not no do does""".split()
)

_BIBTEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_BIBTEX_SPECIALS_RE = re.compile("|".join(re.escape(c) for c in _BIBTEX_SPECIALS))
_TERMINAL = (".", "?", "!")
_WS_RE = re.compile(r"\s+")
_DOI_PREFIX_RE = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/|doi:\s*)", re.IGNORECASE)


# ---------------------------------------------------------------- field access


def _get(row: Any, name: str) -> Any:
    if isinstance(row, Mapping):
        return row.get(name)
    return getattr(row, name, None)


def _text(row: Any, name: str) -> str:
    """A field as clean one-line text: MathML-flattened titles carry stray newlines."""
    value = _get(row, name)
    if value is None:
        return ""
    return _WS_RE.sub(" ", str(value)).strip()


def _authors(row: Any) -> list[dict[str, str]]:
    result = []
    for author in _get(row, "authors") or []:
        fields = {
            key: _WS_RE.sub(" ", str(_get(author, key) or "")).strip()
            for key in ("last", "fore", "initials", "collective")
        }
        if any(fields.values()):
            result.append(fields)
    return result


def normalise_doi(doi: str | None) -> str:
    """A bare DOI (``10.x/y``) from the forms records carry, or "" when it is not a DOI."""
    if not doi:
        return ""
    bare = _DOI_PREFIX_RE.sub("", _WS_RE.sub("", str(doi)))
    return bare if bare.startswith("10.") and "/" in bare else ""


def split_pages(pages: str | None) -> tuple[str, str]:
    """Start and end page, expanding MEDLINE's shortened ranges (``1207-13`` -> 1207, 1213)."""
    text = _WS_RE.sub("", pages or "")
    if not text:
        return "", ""
    first = text.split(",")[0]
    start, sep, end = first.partition("-")
    if not sep or not end:
        return start, ""
    if start.isdigit() and end.isdigit() and len(end) < len(start):
        end = start[: len(start) - len(end)] + end
    return start, end


def _initials(author: Mapping[str, str]) -> str:
    if author["initials"]:
        return author["initials"].replace(".", "").replace(" ", "")
    parts = re.split(r"[\s\-.]+", author["fore"])
    return "".join(p[0].upper() for p in parts if p)


def _terminate(text: str) -> str:
    """End a citation element with a full stop unless it already ends in one (or ? !)."""
    text = text.strip()
    if not text:
        return ""
    return text if text.rstrip("\"'”’").endswith(_TERMINAL) else text + "."


# ---------------------------------------------------------------- text citation


def _vancouver_author(author: Mapping[str, str]) -> str:
    if author["collective"]:
        return author["collective"].rstrip(". ")  # the list's own punctuation follows: "Group., Smith A" reads wrong
    return " ".join(p for p in (author["last"], _initials(author)) if p)


def _source_details(row: Any) -> str:
    """``Year;Vol(Issue):Pages`` with separators only between parts that exist."""
    year, volume, issue, pages = (_text(row, k) for k in ("year", "volume", "issue", "pages"))
    volume_issue = volume + (f"({issue})" if issue else "")
    if volume_issue:
        located = volume_issue + (f":{pages}" if pages else "")
        return f"{year};{located}" if year else located
    if year:
        return f"{year}:{pages}" if pages else year
    return pages


def journal_name_for_citation(row: Any) -> str:
    """NLM prints the journal abbreviation without periods (``J. Clin. Oncol.`` -> ``J Clin Oncol``)."""
    abbrev = _text(row, "journal_abbrev")
    if abbrev:
        return _WS_RE.sub(" ", abbrev.replace(".", " ")).strip()
    return _text(row, "journal")


def format_citation(row: Any) -> str:
    """The primary citation, NLM/Vancouver style, first six authors then "et al."."""
    authors = [_vancouver_author(a) for a in _authors(row)]
    parts: list[str] = []
    if authors:
        listed = ", ".join(authors[:MAX_CITED_AUTHORS])
        if len(authors) > MAX_CITED_AUTHORS:
            listed += ", et al"
        parts.append(_terminate(listed))
    title = _text(row, "title")
    if title:
        parts.append(_terminate(title))
    journal = journal_name_for_citation(row)
    if journal:
        parts.append(_terminate(journal))
    details = _source_details(row)
    if details:
        parts.append(_terminate(details))
    doi = normalise_doi(_get(row, "doi"))
    if doi:
        parts.append(_terminate(f"doi:{doi}"))
    pmid = _text(row, "pmid")
    if pmid:
        parts.append(f"PMID: {pmid}.")
    return " ".join(parts)


# ---------------------------------------------------------------- BibTeX keys


def ascii_fold(text: str) -> str:
    """Transliterate to ASCII: ``Kjørsvik`` -> ``Kjorsvik``, ``Götze`` -> ``Gotze``, ``ß`` -> ``ss``."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_TRANSLITERATION))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).encode("ascii", "ignore").decode()


def _key_word(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", ascii_fold(text).lower())


def _key_surname(row: Any) -> str:
    authors = _authors(row)
    if not authors:
        return "anon"
    first = authors[0]
    if first["last"]:
        return _key_word(first["last"]) or "anon"
    if first["collective"]:
        for word in re.split(r"[\s\-/]+", first["collective"]):
            folded = _key_word(word)
            if folded and folded not in KEY_STOPWORDS:
                return folded
    return _key_word(first["fore"]) or "anon"


def bibtex_key(row: Any) -> str:
    """``<surname>-<year>-<two title words>``: lowercase ASCII, stopwords skipped."""
    year = _text(row, "year")
    year = year if re.fullmatch(r"\d{4}", year) else "nd"
    words = []
    for token in re.split(r"[\s\-/]+", _text(row, "title")):
        word = _key_word(token)
        if word and word not in KEY_STOPWORDS:
            words.append(word)
        if len(words) == 2:
            break
    return "-".join([_key_surname(row), year, *words])


def _suffix(n: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa: enough letters for any collision group."""
    letters = ""
    n += 1
    while n:
        n, rem = divmod(n - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return letters


def _pmid_order(pmid: str) -> tuple[int, str]:
    return (int(pmid), pmid) if pmid.isdigit() else (10**12, pmid)


def unique_keys(rows: Sequence[Any]) -> list[str]:
    """BibTeX keys for ``rows`` (same order), unique within the set.

    In each collision group the lowest PMID keeps the bare key and the others get
    ``-b``, ``-c``, ... in PMID order, so a key already in someone's bibliography
    survives when a newer paper with the same key arrives.
    """
    base = [bibtex_key(r) for r in rows]
    taken = set(base)
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(base):
        groups.setdefault(key, []).append(index)
    keys = list(base)
    for key, members in groups.items():
        if len(members) < 2:
            continue
        ordered = sorted(members, key=lambda i: _pmid_order(_text(rows[i], "pmid")))
        n = 1
        for index in ordered[1:]:
            while f"{key}-{_suffix(n)}" in taken:
                n += 1
            keys[index] = f"{key}-{_suffix(n)}"
            taken.add(keys[index])
            n += 1
    return keys


# ---------------------------------------------------------------- BibTeX


def bibtex_escape(text: str) -> str:
    """Escape the characters BibTeX/LaTeX treat specially: & % $ # _ { } ~ ^ \\."""
    return _BIBTEX_SPECIALS_RE.sub(lambda m: _BIBTEX_SPECIALS[m.group(0)], text)


_TOKEN_RE = re.compile(r"^([(\[\"'“‘]*)(.*?)([.,:;!?)\]\"'”’]*)$", re.S)


def _protect_capitals(title: str) -> str:
    """Brace words whose capitals must survive styles that lowercase titles.

    Any word after the first containing a capital ({ME/CFS}, {Norway}), and the
    first word when it has a capital beyond its first letter ({COVID-19}).
    """
    out = []
    for position, token in enumerate(title.split(" ")):
        lead, core, trail = _TOKEN_RE.match(token).groups()
        capitals = [c.isupper() for c in core]
        needs = any(capitals[1:]) if position == 0 else any(capitals)
        out.append(f"{lead}{{{core}}}{trail}" if needs and core else token)
    return " ".join(out)


def _bibtex_person(author: Mapping[str, str]) -> str:
    if author["collective"]:
        return "{" + bibtex_escape(author["collective"]) + "}"
    last = bibtex_escape(author["last"])
    if "," in author["last"] or re.search(r"\band\b", author["last"]):
        last = "{" + last + "}"
    given = author["fore"] or (". ".join(author["initials"]) + "." if author["initials"] else "")
    return f"{last}, {bibtex_escape(given)}" if given else last


def _bibtex_doi(doi: str) -> str:
    """DOIs are read verbatim by biblatex; only braces and backslashes need escaping."""
    return doi if not re.search(r"[{}\\]", doi) else bibtex_escape(doi)


def to_bibtex(row: Any, key: str) -> str:
    """One ``@article`` entry; every author, UTF-8 kept, specials escaped."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_:.\-]*", key or ""):
        raise ValueError(f"not a usable BibTeX key: {key!r}")
    fields: list[tuple[str, str]] = []
    people = [_bibtex_person(a) for a in _authors(row)]
    if people:
        fields.append(("author", " and ".join(people)))
    title = _text(row, "title")
    if title:
        fields.append(("title", _protect_capitals(bibtex_escape(title))))
    journal = _text(row, "journal") or _text(row, "journal_abbrev")
    if journal:
        fields.append(("journal", bibtex_escape(journal)))
    for field, name in (("year", "year"), ("volume", "volume"), ("number", "issue")):
        value = _text(row, name)
        if value:
            fields.append((field, bibtex_escape(value)))
    start, end = split_pages(_get(row, "pages"))
    if start:
        fields.append(("pages", bibtex_escape(f"{start}--{end}" if end else start)))
    doi = normalise_doi(_get(row, "doi"))
    if doi:
        fields.append(("doi", _bibtex_doi(doi)))
    pmid = _text(row, "pmid")
    if pmid:
        fields.append(("note", f"PMID: {bibtex_escape(pmid)}"))
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields)
    return f"@article{{{key},\n{body}\n}}\n"


# ---------------------------------------------------------------- RIS


def _ris_person(author: Mapping[str, str]) -> str:
    if author["collective"]:
        return author["collective"]
    given = author["fore"] or author["initials"]
    return f"{author['last']}, {given}" if given and author["last"] else author["last"] or given


def to_ris(row: Any) -> str:
    """One RIS record (``TY  - JOUR`` ... ``ER  - ``), one tag per line, LF line ends."""
    lines: list[tuple[str, str]] = [("TY", "JOUR")]
    lines += [("AU", _ris_person(a)) for a in _authors(row)]
    simple = [
        ("TI", _text(row, "title")),
        ("T2", _text(row, "journal") or _text(row, "journal_abbrev")),
        ("JO", _text(row, "journal_abbrev")),
        ("PY", _text(row, "year")),
        ("VL", _text(row, "volume")),
        ("IS", _text(row, "issue")),
    ]
    lines += simple
    start, end = split_pages(_get(row, "pages"))
    lines += [("SP", start), ("EP", end)]
    lines.append(("DO", normalise_doi(_get(row, "doi"))))
    pmid = _text(row, "pmid")
    lines += [("AN", pmid), ("DB", "PubMed" if pmid else "")]
    if pmid:
        lines.append(("UR", f"https://pubmed.ncbi.nlm.nih.gov/{pmid}/"))
    rendered = [f"{tag}  - {value}" for tag, value in lines if value]
    rendered.append("ER  - ")
    return "\n".join(rendered) + "\n"


def citations_for(rows: Iterable[Any]) -> list[tuple[str, str, str, str]]:
    """(key, text citation, BibTeX, RIS) for each row, with keys unique across the set."""
    rows = list(rows)
    return [
        (key, format_citation(row), to_bibtex(row, key), to_ris(row))
        for row, key in zip(rows, unique_keys(rows), strict=True)
    ]
