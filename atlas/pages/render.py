"""Static evidence pages: one page per study plus an index, from ``evidence`` rows.

Everything that comes from a paper is data: Jinja autoescaping is on for every
template, and the only markup let through is the title's small inline
whitelist, rebuilt here tag by tag. Pages carry a Content-Security-Policy that
allows only the site's own stylesheet and the exact inline script each page
ships, so even a missed escape could not run code. Links inside the site are
relative (the site works from ``file://`` or any sub-path); the only external
links go to doi.org and PubMed.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import jinja2
from markupsafe import Markup, escape
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from atlas.citations import format_citation, normalise_doi, to_bibtex, to_ris, unique_keys
from atlas.errors import InputError

DEFAULT_SITE_TITLE = "ME/CFS evidence atlas"
PUBMED_URL = "https://pubmed.ncbi.nlm.nih.gov/{pmid}/"
DOI_URL = "https://doi.org/{doi}"
PEM_ORDER = ("required", "not_required", "unclear", "not_applicable")
UNCLASSIFIED = "unclassified"
SHOWN_AUTHORS = 12

# Fallback wording for a row whose policy carries no label; the policy's own wording wins.
_PEM_FALLBACK_LABELS = {
    "required": "PEM required",
    "not_required": "PEM not required",
    "unclear": "PEM unclear",
    "not_applicable": "PEM not applicable",
    UNCLASSIFIED: "Not yet classified",
}

DESIGN_LABELS = {
    "rct": "Randomised controlled trial",
    "cohort": "Cohort study",
    "case_control": "Case-control study",
    "cross_sectional": "Cross-sectional study",
    "review": "Review",
    "meta_analysis": "Meta-analysis",
    "case_report": "Case report",
    "protocol": "Study protocol",
    "commentary": "Commentary",
    "case_definition": "Case definition",
    "other": "Other design",
    "unknown": "Design not determined",
}

_INLINE_TAGS = ("i", "b", "u", "sup", "sub")
_INLINE_TAG_RE = re.compile(r"<(/?)(i|b|u|sup|sub)\s*>", re.IGNORECASE)
_PMID_RE = re.compile(r"^[1-9][0-9]{0,9}$")
_STALE_PAGE_RE = re.compile(r"^[1-9][0-9]{0,9}\.(?:html|bib|ris)$")
_WS_RE = re.compile(r"\s+")


# ---------------------------------------------------------------- input rows


NOT_STATED_LABEL = "none named for inclusion"  # the catalogue's not_stated, as readers see it


class EvidenceAuthor(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    last: str | None = None
    fore: str | None = None
    initials: str | None = None
    collective: str | None = None
    orcid: str | None = None

    @property
    def full_name(self) -> str:
        if self.collective:
            return self.collective
        return " ".join(p for p in (self.fore or self.initials, self.last) if p)


class EvidenceQuote(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    label: str | None = None
    quote: str
    source: str | None = None


def _decode_json(value: Any) -> Any:
    """DuckDB hands JSON columns back as text; accept them decoded or not."""
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from exc
    return value


class EvidenceRow(BaseModel):
    """One row of the ``evidence`` view: a paper with its current labels and summary."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    pmid: str
    title: str
    title_markup: str | None = None
    authors: list[EvidenceAuthor] = []
    journal: str | None = None
    journal_abbrev: str | None = None
    volume: str | None = None
    issue: str | None = None
    pages: str | None = None
    year: int | None = None
    doi: str | None = None
    pmcid: str | None = None
    publication_types: list[str] = []
    is_retracted: bool = False
    retracted_by: list[str] = []
    criteria: list[str] = []
    criteria_names: list[str] = []
    pem: Literal["required", "not_required", "unclear", "not_applicable"] | None = None
    pem_label: str | None = None
    pem_explainer: str | None = None
    design: str | None = None
    evidence_level: str | None = None
    evidence: list[EvidenceQuote] = []
    summary_status: str | None = None
    backend: str | None = None
    model: str | None = None
    plain_summary: str | None = None
    why_it_matters: str | None = None
    key_findings: list[str] = []
    limitations: list[str] = []
    does_not_prove: str | None = None
    open_questions: list[str] = []
    generator_version: str | None = None
    scanner_version: str | None = None
    policy_version: str | None = None
    accessed: date | None = None

    @field_validator("pmid", mode="before")
    @classmethod
    def _pmid_digits(cls, value: Any) -> str:
        text = str(value).strip() if value is not None else ""
        if not _PMID_RE.match(text):
            raise ValueError(f"a PMID is a positive integer, got {value!r}")
        return text

    @field_validator("volume", "issue", "pages", "generator_version", "scanner_version", "policy_version", mode="before")
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator(
        "authors", "publication_types", "retracted_by", "criteria", "criteria_names", "evidence",
        "key_findings", "limitations", "open_questions", mode="before",
    )
    @classmethod
    def _list_or_empty(cls, value: Any) -> Any:
        value = _decode_json(value)
        return [] if value is None else value

    @field_validator("retracted_by", mode="before")
    @classmethod
    def _notice_refs_as_text(cls, value: Any) -> Any:
        value = _decode_json(value)
        return [str(v) for v in value] if isinstance(value, list) else value

    @field_validator("does_not_prove", mode="before")
    @classmethod
    def _joined_text(cls, value: Any) -> Any:
        return " ".join(str(v) for v in value) if isinstance(value, list) else value

    @field_validator("is_retracted", mode="before")
    @classmethod
    def _null_is_false(cls, value: Any) -> Any:
        return False if value is None else value

    # ---- derived display values

    @property
    def pem_key(self) -> str:
        return self.pem or UNCLASSIFIED

    @property
    def pem_badge(self) -> str:
        return self.pem_label or _PEM_FALLBACK_LABELS[self.pem_key]

    @property
    def design_label(self) -> str | None:
        if not self.design:
            return None
        return DESIGN_LABELS.get(self.design, self.design.replace("_", " ").capitalize())

    @property
    def criteria_pairs(self) -> list[tuple[str, str]]:
        """(catalogue id, display name); the id stands in when the name list is short."""
        names = list(self.criteria_names)
        return [(cid, NOT_STATED_LABEL if cid == "not_stated" else names[i] if i < len(names) and names[i] else cid)
                for i, cid in enumerate(self.criteria)]

    @property
    def doi_bare(self) -> str:
        return normalise_doi(self.doi)

    @property
    def doi_url(self) -> str | None:
        doi = self.doi_bare
        return DOI_URL.format(doi=quote(doi, safe="/")) if doi else None

    @property
    def pubmed_url(self) -> str:
        return PUBMED_URL.format(pmid=self.pmid)

    @property
    def retraction_notices(self) -> list[tuple[str, str | None]]:
        """(text, PubMed link or None): PMIDs link to PubMed, other references stay text."""
        notices = []
        for ref in self.retracted_by:
            ref = ref.strip()
            bare = ref.removeprefix("PMID:").strip()
            if _PMID_RE.match(bare):
                notices.append((f"PMID {bare}", PUBMED_URL.format(pmid=bare)))
            elif ref:
                notices.append((ref, None))
        return notices

    @property
    def summary_published(self) -> bool:
        return self.summary_status == "ok"

    @property
    def title_html(self) -> Markup:
        """The title with its inline markup (sanitised), or the escaped plain title."""
        markup = sanitise_inline_markup(self.title_markup)
        return markup if markup.striptags().strip() else escape(self.plain_title)

    @property
    def plain_title(self) -> str:
        return _WS_RE.sub(" ", self.title).strip() or "(untitled)"


def evidence_row_from_dict(data: Mapping[str, Any]) -> EvidenceRow:
    """Validate one ``evidence`` row; the error names the PMID and every bad field."""
    if not isinstance(data, Mapping):
        raise InputError(f"an evidence row must be a mapping, got {type(data).__name__}")
    try:
        return EvidenceRow.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'row'}: {err['msg']}" for err in exc.errors()
        )
        raise InputError(f"evidence row for PMID {data.get('pmid')!r} is invalid: {problems}") from exc


# ---------------------------------------------------------------- safe markup


def sanitise_inline_markup(markup: str | None) -> Markup:
    """Keep only bare <i> <b> <u> <sup> <sub>, balanced; escape everything else.

    Text between tags is unescaped once and re-escaped, so the parser's entities
    (``&amp;``) are not doubled and anything that is not a whitelisted tag,
    escaped or not, ends up as inert text.
    """
    if not markup:
        return Markup("")
    out: list[str] = []
    stack: list[str] = []
    position = 0
    for match in _INLINE_TAG_RE.finditer(markup):
        out.append(str(escape(html.unescape(markup[position : match.start()]))))
        position = match.end()
        closing, tag = match.group(1) == "/", match.group(2).lower()
        if not closing:
            stack.append(tag)
            out.append(f"<{tag}>")
        elif tag in stack:
            while stack:
                top = stack.pop()
                out.append(f"</{top}>")
                if top == tag:
                    break
    out.append(str(escape(html.unescape(markup[position:]))))
    out.extend(f"</{tag}>" for tag in reversed(stack))
    return Markup("".join(out))


def versions_line(row: EvidenceRow, accessed: date) -> str:
    """``Generator v1 / Scanner v1.4 / policy v0.1. Accessed 2025-01-31``."""

    def tagged(version: str | None) -> str:
        if not version:
            return "n/a"
        version = version.strip()
        return f"v{version[1:]}" if version[:1] in ("v", "V") else f"v{version}"

    return (
        f"Generator {tagged(row.generator_version)} / Scanner {tagged(row.scanner_version)} / "
        f"policy {tagged(row.policy_version)}. Accessed {accessed.isoformat()}"
    )


# ---------------------------------------------------------------- rendering


@dataclass(slots=True)
class RenderResult:
    """What a render wrote (``changed`` counts files whose bytes changed), and the rows
    it could not use (reported, never silent)."""

    out_dir: Path
    index: Path
    pages: list[Path] = field(default_factory=list)
    changed: int = 0
    skipped: list[tuple[str | None, str]] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("atlas.pages", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _asset(name: str) -> str:
    return resources.files("atlas.pages").joinpath("templates", name).read_text("utf-8")


def _script_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")


def _csp(script: str) -> str:
    return (
        "default-src 'none'; style-src 'self'; img-src 'self'; "
        f"script-src '{_script_hash(script)}'; base-uri 'none'; form-action 'none'"
    )


def _write(path: Path, text: str, *, newline: str = "\n") -> bool:
    """Write by rename so a reader never sees half a page; leave identical files alone.

    Returns whether the file changed. Skipping unchanged files keeps a nightly
    re-render of a mostly unchanged corpus cheap and its mtimes meaningful.
    """
    data = text.replace("\n", newline).encode("utf-8") if newline != "\n" else text.encode("utf-8")
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def _coerce_rows(rows: Iterable[EvidenceRow | Mapping[str, Any]], skipped: list[tuple[str | None, str]]) -> list[EvidenceRow]:
    accepted: dict[str, EvidenceRow] = {}
    for raw in rows:
        try:
            row = raw if isinstance(raw, EvidenceRow) else evidence_row_from_dict(raw)
        except InputError as exc:
            pmid = raw.get("pmid") if isinstance(raw, Mapping) else None
            skipped.append((None if pmid is None else str(pmid), str(exc)))
            continue
        if row.pmid in accepted:
            skipped.append((row.pmid, f"PMID {row.pmid} appears more than once; the first row was rendered"))
            continue
        accepted[row.pmid] = row
    return list(accepted.values())


def _sort_key(row: EvidenceRow) -> tuple[int, int]:
    return (-(row.year or 0), -int(row.pmid))


def render_pages(
    rows: Iterable[EvidenceRow | Mapping[str, Any]],
    out_dir: Path,
    *,
    accessed: date,
    site_title: str = DEFAULT_SITE_TITLE,
) -> RenderResult:
    """Write ``index.html``, ``papers/<pmid>.html`` (+ ``.bib``/``.ris``) and site-wide citation files.

    ``accessed`` is the date printed in each page's versions line unless the row
    carries its own. Rows that fail validation (or repeat a PMID) are skipped and
    listed in ``RenderResult.skipped``. Pages in ``papers/`` for PMIDs no longer
    in ``rows`` are removed so a withdrawn paper does not linger.
    """
    out_dir = Path(out_dir)
    result = RenderResult(out_dir=out_dir, index=out_dir / "index.html")
    papers = sorted(_coerce_rows(rows, result.skipped), key=_sort_key)
    env = _environment()
    paper_template = env.get_template("paper.html")
    index_template = env.get_template("index.html")
    paper_script = _asset("paper.js")
    index_script = _asset("index.js")

    result.changed += _write(out_dir / "assets" / "atlas.css", _asset("atlas.css"))
    keys = unique_keys(papers)
    bibtex_all: list[str] = []
    ris_all: list[str] = []
    papers_dir = out_dir / "papers"
    for row, key in zip(papers, keys, strict=True):
        citation = format_citation(row)
        bibtex = to_bibtex(row, key)
        ris = to_ris(row)
        bibtex_all.append(bibtex)
        ris_all.append(ris)
        page = paper_template.render(
            row=row,
            site_title=site_title,
            root="../",
            citation=citation,
            bibtex_key=key,
            bibtex=bibtex,
            ris=ris,
            versions=versions_line(row, row.accessed or accessed),
            shown_authors=row.authors[:SHOWN_AUTHORS],
            more_authors=row.authors[SHOWN_AUTHORS:],
            script=Markup(paper_script),
            csp=_csp(paper_script),
        )
        path = papers_dir / f"{row.pmid}.html"
        result.changed += _write(path, page)
        result.changed += _write(papers_dir / f"{row.pmid}.bib", bibtex)
        result.changed += _write(papers_dir / f"{row.pmid}.ris", ris, newline="\r\n")
        result.pages.append(path)

    result.changed += _write(out_dir / "citations.bib", "\n".join(bibtex_all))
    result.changed += _write(out_dir / "citations.ris", "\n".join(ris_all), newline="\r\n")

    present_pem = {row.pem_key for row in papers}
    pem_options = [(key, _badge_for(papers, key)) for key in (*PEM_ORDER, UNCLASSIFIED) if key in present_pem]
    criteria_options = sorted(
        {cid: name for row in papers for cid, name in row.criteria_pairs}.items(), key=lambda item: item[1].lower()
    )
    years = sorted({row.year for row in papers if row.year}, reverse=True)
    index = index_template.render(
        rows=papers,
        site_title=site_title,
        root="",
        pem_options=pem_options,
        criteria_options=criteria_options,
        years=years,
        generated=accessed.isoformat(),
        script=Markup(index_script),
        csp=_csp(index_script),
    )
    result.changed += _write(result.index, index)

    current = {f"{row.pmid}.{ext}" for row in papers for ext in ("html", "bib", "ris")}
    if papers_dir.is_dir():
        for stale in sorted(papers_dir.iterdir()):
            if _STALE_PAGE_RE.match(stale.name) and stale.name not in current:
                stale.unlink()
                result.removed.append(stale)
    return result


def _badge_for(papers: list[EvidenceRow], pem_key: str) -> tuple[str, str | None]:
    """The label and explainer the policy gives a badge (from the first row that has it)."""
    label, explainer = _PEM_FALLBACK_LABELS[pem_key], None
    for row in papers:
        if row.pem_key == pem_key:
            if row.pem_label:
                label = row.pem_label
            if row.pem_explainer:
                return label, row.pem_explainer
    return label, explainer
