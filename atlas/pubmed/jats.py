"""Read the methods section out of PMC full text (JATS XML).

Accepts what PMC hands out: efetch ``db=pmc`` (``<pmc-articleset><article>``,
elements in no namespace) and the OAI-PMH ``GetRecord`` wrapper (the article in
the JATS namespace). Element names are compared by local name so both work.

Pure functions with the same safe parser as the PubMed parser: no DTD, no
entity expansion, no network.
"""

from __future__ import annotations

import re

from lxml import etree

from atlas.errors import ParseError
from atlas.pubmed.parse import collapse_ws, math_text, safe_xml_parser

_METHODS_SEC_TYPES = frozenset(
    {"methods", "method", "materials", "subjects", "cases", "materials-and-methods", "methods-and-materials"}
)
_METHODS_TITLE = re.compile(
    r"""^(?:
        (?:materials?|patients?|subjects?|participants?|population|cases|study\ (?:population|participants))
            \s*(?:and|&)\s*methods?
      | methods?\s*(?:and|&)\s*(?:materials?|participants?|patients?|subjects?|(?:study\ )?design|analysis)
      | (?:research\ |study\ )?design\s*(?:and|&)\s*(?:methods?|setting|participants?|population)
      | methods? | methodology | materials?
      | participants? | study\ (?:participants|population|design|subjects|setting)
      | experimental\ (?:procedures?|section|design|methods?)
      | (?:eligibility|inclusion)\ criteria
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
_NUMBERING = re.compile(r"^(?:\d+(?:\.\d+)*|[IVX]+|[A-Z])[.)]?\s+")

# Elements that start a new line of text; everything else is inline.
_BLOCKS = frozenset(
    {
        "sec", "p", "title", "label", "caption", "list", "list-item", "def-list", "def-item", "table-wrap",
        "table-wrap-foot", "table", "thead", "tbody", "tfoot", "fig", "boxed-text", "disp-quote", "statement",
        "disp-formula", "fn", "fn-group", "speech", "verse-group", "verse-line", "glossary",
    }
)
# Elements with nothing to read.
_SKIP = frozenset({"graphic", "inline-graphic", "media", "object-id", "alt-text", "long-desc", "processing-meta"})
_OA_LICENSE = re.compile(r"creativecommons\.org|open[- ]access", re.IGNORECASE)


def extract_methods(xml: bytes | str) -> str | None:
    """Plain text of the article's methods section(s); None when it has none.

    A section counts when its ``sec-type`` says methods/materials/subjects or
    its title reads like one (Methods, Materials and methods, Patients and
    methods, Participants, Study design, ...). Subsections come with their
    parent. Titles and paragraphs are separate lines, table rows are
    ``cell | cell`` lines, MathML is linear text; sections are separated by a
    blank line.
    """
    article = _article(_parse(xml))
    body = _child(article, "body")
    if body is None:
        return None
    chosen: list[etree._Element] = []
    for sec in body.iter():
        if not isinstance(sec.tag, str) or _local(sec.tag) != "sec":
            continue
        if any(sec is parent or _is_inside(sec, parent) for parent in chosen):
            continue
        if _is_methods(sec):
            chosen.append(sec)
    texts = [text for text in (_block_text(sec) for sec in chosen) if text]
    return "\n\n".join(texts) if texts else None


def is_open_access(xml: bytes | str) -> bool | None:
    """True for an open-access article, False when its permissions say otherwise, None if the document does not say."""
    root = _parse(xml)
    for element in root.iter():
        tag = element.tag
        if tag is etree.ProcessingInstruction:
            if element.target == "properties" and "open_access" in (element.text or ""):
                return True
            continue
        if not isinstance(tag, str):
            continue
        name = _local(tag)
        if name == "setSpec" and (element.text or "").strip() == "pmc-open":
            return True
        if name == "license":
            if _OA_LICENSE.search(element.get("license-type") or ""):
                return True
            href = element.get("{http://www.w3.org/1999/xlink}href") or ""
            if _OA_LICENSE.search(href):
                return True
        if name == "license_ref" and _OA_LICENSE.search(element.text or ""):
            return True
    article = _article(root)
    permissions = next((e for e in article.iter() if isinstance(e.tag, str) and _local(e.tag) == "permissions"), None)
    if permissions is not None and len(permissions):
        return False
    return None


# --------------------------------------------------------------------------- document


def _parse(xml: bytes | str) -> etree._Element:
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    if not xml or not xml.strip():
        raise ParseError("PMC document is empty")
    try:
        return etree.fromstring(xml, safe_xml_parser())
    except etree.XMLSyntaxError as exc:
        raise ParseError(f"PMC XML is malformed or truncated: {exc}") from exc


def _article(root: etree._Element) -> etree._Element:
    """The (first) article, whatever wraps it; OAI-PMH errors are named."""
    if _local(root.tag) == "article":
        return root
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue
        name = _local(element.tag)
        if name == "article":
            return element
        if name == "error" and _local(root.tag) == "OAI-PMH":
            code = element.get("code", "error")
            raise ParseError(f"PMC OAI-PMH reported {code}: {collapse_ws(element.text or '')}")
        if name == "ERROR":
            raise ParseError(f"PMC efetch reported ERROR: {collapse_ws(element.text or '')}")
    raise ParseError(f"no <article> in PMC document (root element <{_local(root.tag)}>)")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2] if tag[0] == "{" else tag


def _child(element: etree._Element, name: str) -> etree._Element | None:
    for child in element:
        if isinstance(child.tag, str) and _local(child.tag) == name:
            return child
    return None


def _is_inside(element: etree._Element, ancestor: etree._Element) -> bool:
    return any(parent is ancestor for parent in element.iterancestors())


def _is_methods(sec: etree._Element) -> bool:
    sec_type = (sec.get("sec-type") or "").lower()
    if sec_type and _METHODS_SEC_TYPES.intersection(re.split(r"[|\s]+", sec_type)):
        return True
    title = _child(sec, "title")
    if title is None:
        return False
    text = collapse_ws("".join(title.itertext())).rstrip(".:")
    return bool(_METHODS_TITLE.match(_NUMBERING.sub("", text)))


# --------------------------------------------------------------------------- text


def _block_text(element: etree._Element) -> str:
    lines: list[str] = []
    buffer: list[str] = []
    _walk(element, lines, buffer)
    _flush(lines, buffer)
    return "\n".join(lines)


def _flush(lines: list[str], buffer: list[str]) -> None:
    if buffer:
        text = collapse_ws("".join(buffer))
        if text:
            lines.append(text)
        buffer.clear()


def _walk(element: etree._Element, lines: list[str], buffer: list[str]) -> None:
    if element.text:
        buffer.append(element.text)
    for child in element:
        tag = child.tag
        if isinstance(tag, str):
            name = _local(tag)
            if tag.startswith("{http://www.w3.org/1998/Math/MathML}") or name == "math":
                buffer.append(math_text(child))
            elif name in _SKIP:
                pass
            elif name == "alternatives":
                _walk_alternative(child, lines, buffer)
            elif name == "break":
                buffer.append(" ")
            elif name == "tr":
                _flush(lines, buffer)
                cells = [_block_text(cell).replace("\n", " ") for cell in child if isinstance(cell.tag, str)]
                row = " | ".join(cell for cell in cells if cell)
                if row:
                    lines.append(row)
            elif name in _BLOCKS:
                _flush(lines, buffer)
                inner: list[str] = []
                _walk(child, lines, inner)
                _flush(lines, inner)
            else:
                _walk(child, lines, buffer)
        if child.tail:
            buffer.append(child.tail)


def _walk_alternative(alternatives: etree._Element, lines: list[str], buffer: list[str]) -> None:
    """One rendering of a formula: MathML, else TeX, else whatever comes first."""
    options = [c for c in alternatives if isinstance(c.tag, str) and _local(c.tag) not in _SKIP]
    if not options:
        return
    preferred = next((c for c in options if _local(c.tag) == "math"), None)
    if preferred is None:
        preferred = next((c for c in options if _local(c.tag) == "tex-math"), options[0])
    if _local(preferred.tag) == "math":
        buffer.append(math_text(preferred))
    else:
        _walk(preferred, lines, buffer)
