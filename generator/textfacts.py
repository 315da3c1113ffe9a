"""Facts read from paper text by pattern: sentences, numbers, sample size, design cues.

Pure functions shared by the extractive summariser and the checks, so both
read a paper the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# Abbreviations whose full stop does not end a sentence.
_ABBREVIATIONS = (
    "e.g", "i.e", "et al", "vs", "approx", "fig", "figs", "dr", "no", "ref", "refs", "cf", "ca", "incl",
    "resp", "min", "max", "yr", "yrs", "mo", "wk", "wks", "st", "jr", "sr", "mr", "mrs", "ms", "prof",
)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")


def split_sentences(text: str | None) -> list[str]:
    """Split prose into sentences without breaking on decimals or common abbreviations."""
    if not text:
        return []
    text = re.sub(r"\s+", " ", text).strip()
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        candidate = text[start : match.start()].rstrip()
        tail = candidate.rstrip(".!?\"'”’)]").lower()
        last_word = re.split(r"[\s(\[]", tail)[-1] if tail else ""
        if last_word in _ABBREVIATIONS:
            continue
        sentences.append(text[start : match.end()].strip())
        start = match.end()
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    return [s for s in sentences if s]


def words(text: str) -> list[str]:
    """Word tokens (letters, digits, inner hyphens, slashes and apostrophes)."""
    return re.findall(r"[A-Za-z0-9][A-Za-z0-9'’/-]*", text or "")


# --- numbers -----------------------------------------------------------------

# 1,000 | 1000 | 12.5 | .05 | 12·5 ; a thousands separator needs groups of exactly three digits.
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+(?!\d)|\d+(?:[.·]\d+)?|[.·]\d+)(?!\d)")


def normalise_number(token: str) -> str:
    """Canonical text for a number: no thousands separators, no trailing zeros (12.50 -> 12.5, 1,000 -> 1000)."""
    cleaned = token.replace(",", "").replace("·", ".")
    if cleaned.startswith("."):
        cleaned = "0" + cleaned
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return cleaned
    text = format(value.normalize(), "f")
    return text


def numbers_in(text: str | None) -> list[str]:
    """Every number written with digits, normalised (percent signs and units are not part of it)."""
    if not text:
        return []
    return [normalise_number(m.group(1)) for m in _NUMBER.finditer(text)]


def number_is_grounded(number: str, source_numbers: set[str]) -> bool:
    """True when ``number`` appears in the source, exactly or as a rounding of a more precise source figure.

    Rounding is accepted only when the output keeps at least one decimal place
    (12.5 from 12.46), so a whole number must match exactly.
    """
    if number in source_numbers:
        return True
    if "." not in number:
        return False
    places = len(number.split(".")[1])
    target = Decimal(number)
    for candidate in source_numbers:
        if "." in candidate and len(candidate.split(".")[1]) > places:
            if Decimal(candidate).quantize(Decimal(1).scaleb(-places)) == target:
                return True
    return False


# --- sample size -------------------------------------------------------------

_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
_PEOPLE = (
    r"(?:patients|participants|subjects|individuals|people|persons|women|men|adults|adolescents|children|"
    r"cases|controls|volunteers|respondents|veterans|twins|pairs|families|students)"
)
_COUNT_WORD = r"(?:\d{1,3}(?:,\d{3})+|\d+|(?:" + "|".join(_NUMBER_WORDS) + r")(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?)"
_COUNT_NOUN = re.compile(
    r"(?<![\w.,])(" + _COUNT_WORD + r")\s+(?:[A-Za-z/()-]+\s+){0,3}?" + _PEOPLE + r"\b", re.IGNORECASE
)
_N_EQUALS = re.compile(r"\b[nN]\s*=\s*(\d{1,3}(?:,\d{3})+|\d+)(?![\d.])")


def _count_value(token: str) -> int | None:
    token = token.lower().replace(",", "")
    if token.isdigit():
        return int(token)
    parts = re.split(r"[- ]", token)
    total = 0
    for part in parts:
        if part not in _NUMBER_WORDS:
            return None
        total += _NUMBER_WORDS[part]
    return total


def sample_size(text: str | None) -> int | None:
    """Best guess at the number of people studied, from "n = 24" or "48 adult patients".

    Within a sentence, group counts add up ("24 patients and 20 controls" -> 44)
    unless one count is the sum of the others ("48 people: 24 with ME/CFS and 24
    controls" -> 48). An "n = X" right after the same count in words is counted
    once. The paper's answer is the largest sentence total.
    """
    best: int | None = None
    for sentence in split_sentences(text):
        found: list[tuple[int, int]] = []
        for match in _COUNT_NOUN.finditer(sentence):
            value = _count_value(match.group(1))
            if value is not None and value > 0:
                found.append((match.start(), value))
        worded = list(found)
        for match in _N_EQUALS.finditer(sentence):
            value = int(match.group(1).replace(",", ""))
            duplicate = any(value == v and 0 <= match.start() - pos <= 80 for pos, v in worded)
            if value > 0 and not duplicate:
                found.append((match.start(), value))
        if not found:
            continue
        counts = [v for _, v in found]
        largest = max(counts)
        rest = sum(counts) - largest
        total = largest if len(counts) >= 3 and largest == rest else sum(counts)
        if len(counts) == 2 and largest == rest and _is_total_then_part(sentence):
            total = largest
        best = total if best is None else max(best, total)
    return best


def _is_total_then_part(sentence: str) -> bool:
    return bool(re.search(r"\b(of whom|including|of these|of which)\b", sentence, re.IGNORECASE))


# --- design cues -------------------------------------------------------------

_DESIGN_CUES: tuple[tuple[str, str], ...] = (
    ("meta_analysis", r"\bmeta-?analys[ie]s\b"),
    ("protocol", r"\b(study|trial) protocol\b|\bprotocol for a\b"),
    ("rct", r"\brandomi[sz]ed(?:,)?\s+(?:\w+[ -]?){0,3}(?:controlled\s+)?(?:clinical\s+)?trial\b|\bRCT\b"),
    ("review", r"\b(systematic|scoping|narrative|literature) review\b|\bthis review\b|\bwe review\b"),
    ("case_report", r"\bcase (report|series)\b|\bwe (report|describe) (a|an|the case)\b"),
    ("case_control", r"\bcase-?control\b"),
    ("cohort", r"\b(cohort|longitudinal|prospective|follow-up) (study|design|analysis)\b|\bcohort of\b"),
    ("cross_sectional", r"\bcross-?sectional\b|\bsurvey\b"),
)


_DESIGN_PATTERNS = tuple((design, re.compile(pattern, re.IGNORECASE)) for design, pattern in _DESIGN_CUES)


def detect_design(text: str | None) -> str:
    """Study design named in the text, or ``unknown``. Used only when the scanner gave no label."""
    if text:
        for design, pattern in _DESIGN_PATTERNS:
            if pattern.search(text):
                return design
    return "unknown"


_UNCONTROLLED = re.compile(
    r"\b(open-label|single-arm|single arm|uncontrolled|non-?randomi[sz]ed|case series|pilot study|feasibility study|"
    r"no control group|without a control group)\b",
    re.IGNORECASE,
)
UNCONTROLLED_DESIGNS = frozenset({"case_report"})


def is_uncontrolled(text: str | None, design: str | None) -> bool:
    """A study with no comparison group, by its design label or by its own words."""
    if design in UNCONTROLLED_DESIGNS:
        return True
    return bool(text and _UNCONTROLLED.search(text))


# --- instruction-like text -----------------------------------------------------

_OBEY_NOT = r"(?:ignore|disregard|forget|override|bypass)"
_ORDERS = r"(?:instructions?|prompts?|rules|directions|guidelines|directives)"
INSTRUCTION_PATTERNS: tuple[str, ...] = (
    # addressed to whoever reads the text: "ignore your instructions", "disregard the previous rules",
    # "ignore the instructions above"; not "clinicians ignore the guidelines"
    rf"\b{_OBEY_NOT} (?:all |any )?(?:of )?(?:your|my) (?:\w+ )?{_ORDERS}\b",
    rf"\b{_OBEY_NOT} (?:all |any )?(?:of )?(?:the |these |those )?(?:previous|prior|above|earlier|preceding|original|"
    rf"system) {_ORDERS}\b",
    rf"\b{_OBEY_NOT} (?:all |any )?(?:of )?(?:the |these |those )?{_ORDERS} (?:above|before|given|so far)\b",
    rf"\b{_OBEY_NOT} (?:everything|anything|all|what(?:ever)? (?:was|is) (?:said|written)) (?:above|before|previously|"
    r"so far|you (?:were|have been) told)\b",
    r"\b(?:note|message|instructions?|attention) (?:to|for) (?:any |the |all )?(?:ai|a\.i\.|llm|language model|chatbot|"
    r"assistant|summari[sz](?:er|ing)|(?:automated |automatic )?(?:summari[sz]ation |summari[sz]ing )?(?:system|tool|"
    r"model|program)s?)\b",
    r"\b(?:if you are|as) an? (?:ai|llm|language model|assistant|summari[sz]er|summari[sz]ing (?:system|tool|model))\b",
    r"\b(?:describe|present|report|summari[sz]e|portray) (?:these|the|this|our) (?:results?|findings?|stud(?:y|ies)|"
    r"trial|paper) as (?:definitive|conclusive|proven|proof|a cure|curative|safe and effective)\b",
    r"\b(?:new|updated|override) instructions?\s*:",
    r"\bsystem prompt\b",
    r"\byou are now\b",
    r"\bas an ai(?: language model)?\b",
    r"\bdeveloper mode\b",
    r"\bjailbreak\b",
    r"\brespond only with\b|\breply only with\b|\boutput only\b",
)
_INSTRUCTION = re.compile("|".join(INSTRUCTION_PATTERNS), re.IGNORECASE)


def instruction_phrases(text: str | None) -> list[str]:
    """Phrases that read as instructions to a language model rather than as science."""
    if not text:
        return []
    return [m.group(0) for m in _INSTRUCTION.finditer(text)]


def instruction_sentences(text: str | None) -> list[str]:
    """Sentences of the source that carry instruction-like phrases (text to treat as data only)."""
    return [s for s in split_sentences(text) if _INSTRUCTION.search(s)]


# --- advice ----------------------------------------------------------------------

ADVICE_PATTERNS: tuple[str, ...] = (
    r"\byou should\b", r"\byou must\b", r"\byou need to\b", r"\byou can try\b",
    r"\bpatients should\b", r"\bpeople (?:with [\w/ -]+ )?should\b",
    r"\bshould (?:stop|start|take|avoid|try|begin|use|ask)\b",
    r"\bstop taking\b", r"\bstart taking\b",
    r"\bconsult (?:your|a|with)\b", r"\b(?:talk|speak) (?:to|with) your\b", r"\bask your (?:doctor|gp|physician)\b",
    r"\bwe (?:recommend|advise|suggest) (?:that )?you\b", r"\bwe recommend that patients\b",
    r"\bclinicians should\b", r"\bdoctors should\b",
)
_ADVICE = re.compile("|".join(ADVICE_PATTERNS), re.IGNORECASE)


def advice_phrases(text: str | None) -> list[str]:
    """Phrases that tell the reader (or patients, or doctors) what to do."""
    if not text:
        return []
    return [m.group(0) for m in _ADVICE.finditer(text)]


@dataclass(frozen=True, slots=True)
class LabelledPart:
    label: str  # background | objective | methods | results | conclusions | other
    text: str


_INLINE_LABEL = re.compile(
    r"(?:(?<=^)|(?<=[.!?]\s))\s*(?P<label>(?:background|introduction|context|objectives?|aims?|purpose|"
    r"methods?|design|setting|participants|interventions?|measurements?|results?|findings|"
    r"conclusions?|interpretation|discussion|significance)(?:\s*(?:/|and|&)\s*(?:\w+))?)\s*:\s*",
    re.IGNORECASE,
)


def _label_kind(label: str) -> str:
    label = label.lower()
    for kind, stems in (
        ("conclusions", ("conclu", "interpret", "discussion", "significance")),
        ("results", ("result", "finding")),
        ("methods", ("method", "design", "setting", "participant", "intervention", "measurement")),
        ("objective", ("objective", "aim", "purpose")),
        ("background", ("background", "introduction", "context")),
    ):
        if label.startswith(stems):
            return kind
    return "other"


_INLINE_TAG = re.compile(r"</?(?:b|i|u|em|strong|sup|sub|sc)>", re.IGNORECASE)


def strip_inline_markup(text: str | None) -> str:
    """Plain text from abstracts that still carry PubMed's inline tags (<i>, <sup>, <b> ...)."""
    return _INLINE_TAG.sub("", text or "")


def labelled_parts(abstract: str | None, sections: list[tuple[str | None, str]] | None = None) -> list[LabelledPart]:
    """The abstract cut into labelled parts: from PubMed's sections, else from inline "Results:" labels."""
    if sections and any(label for label, _ in sections):
        return [LabelledPart(_label_kind(label or ""), strip_inline_markup(text)) for label, text in sections if text]
    abstract = strip_inline_markup(abstract)
    if not abstract:
        return []
    matches = list(_INLINE_LABEL.finditer(abstract))
    if not matches:
        return [LabelledPart("other", abstract.strip())]
    parts: list[LabelledPart] = []
    if matches[0].start() > 0 and abstract[: matches[0].start()].strip():
        parts.append(LabelledPart("other", abstract[: matches[0].start()].strip()))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(abstract)
        body = abstract[match.end() : end].strip()
        if body:
            parts.append(LabelledPart(_label_kind(match.group("label")), body))
    return parts
