"""Checks that decide whether a summary is published.

Every summary, whichever backend wrote it, goes through the same checks. A
summary is published only when all of them pass; otherwise it is kept as
``flagged`` with the reasons. ``CHECKS_VERSION`` is stored on every summary so
a change here is visible in the data.

What is checked, and why:

* ``schema``: the fields are the ones the pages show, with the right types.
* ``source_text``: there is an abstract or methods text to ground the summary on.
* ``numbers_grounded``: every number in the summary appears in the paper (or its
  labels), after normalising 1,000/1000, 12.50/12.5 and percent signs; a figure
  with decimals may be a rounding of a more precise source figure.
* ``causal_language``: curative words ("cures", "proves", "miracle") are never
  allowed; causal ones ("causes", "leads to", "reverses", "is effective") only for
  designs that can test effects (randomised trials, meta-analyses). Negated or
  hedged uses ("cannot show that X causes Y") and questions are fine; the
  ``does_not_prove`` and ``open_questions`` fields exist to talk about causation
  and are scanned for curative words only ("It does not prove that X cures"
  passes, "It proves that X cures" does not).
* ``hedging``: a small (n < 30) or uncontrolled study must be described with
  hedged wording in the lead prose (plain_summary or why_it_matters).
* ``reading_grade``: the Flesch-Kincaid grade of the lead prose (plain_summary,
  why_it_matters, does_not_prove) is at most ``max_reading_grade``. The disease
  names (ME/CFS, myalgic encephalomyelitis, chronic fatigue syndrome,
  post-exertional malaise) count as one short word: a reader of these pages
  knows them and they cannot be simplified.
* ``length``: word and item counts within the bounds in ``CheckPolicy``.
* ``advice``: no medical advice ("you should", "patients should stop", "consult
  your doctor", "we recommend that you").
* ``instructions``: nothing in the paper's text was obeyed as an instruction: the
  summary contains no instruction-like phrases and does not reproduce wording
  that only occurs in an instruction-like sentence of the source.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from generator import textfacts

CHECKS_VERSION = "2"

PROSE_FIELDS = ("plain_summary", "why_it_matters", "does_not_prove")
LEAD_FIELDS = ("plain_summary", "why_it_matters")
TEXT_FIELDS = ("plain_summary", "why_it_matters", "does_not_prove")
LIST_FIELDS = ("key_findings", "limitations", "open_questions")
CAUSAL_SCANNED_FIELDS = ("plain_summary", "why_it_matters", "key_findings", "limitations")
CURATIVE_ONLY_FIELDS = ("does_not_prove", "open_questions")  # they discuss causation, but never claim a cure


@dataclass(frozen=True, slots=True)
class CheckPolicy:
    """Bounds for the checks. Defaults suit a one-screen study page read by patients and carers."""

    max_reading_grade: float = 10.0
    plain_summary_words: tuple[int, int] = (15, 160)
    why_it_matters_words: tuple[int, int] = (5, 90)
    does_not_prove_words: tuple[int, int] = (5, 90)
    key_findings_items: tuple[int, int] = (1, 6)
    limitations_items: tuple[int, int] = (1, 6)
    open_questions_items: tuple[int, int] = (0, 5)
    max_words_per_item: int = 70
    small_study_n: int = 30
    effect_designs: frozenset[str] = frozenset({"rct", "meta_analysis"})


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class SourceFacts:
    """What the checks need to know about the paper the summary is about."""

    text: str
    design: str
    sample_size: int | None
    uncontrolled: bool
    numbers: frozenset[str] = field(default_factory=frozenset)
    instruction_sentences: tuple[str, ...] = ()
    has_body: bool = True


def source_facts(title: str | None, abstract: str | None, methods: str | None = None,
                 labels: Mapping[str, Any] | None = None) -> SourceFacts:
    """Read the facts the checks use from a paper's text and its scanner labels."""
    body = "\n".join(part for part in (abstract, methods) if part)
    text = "\n".join(part for part in (title, body) if part)
    design = (labels or {}).get("design") or textfacts.detect_design(text)
    label_text = " ".join(str(v) for v in (labels or {}).values() if v is not None).replace("_", " ")
    return SourceFacts(
        text=text,
        design=design,
        sample_size=textfacts.sample_size(body),
        uncontrolled=textfacts.is_uncontrolled(text, design),
        numbers=frozenset(textfacts.numbers_in(text) + textfacts.numbers_in(label_text)),
        instruction_sentences=tuple(textfacts.instruction_sentences(text)),
        has_body=bool(body.strip()),
    )


# --- readability ----------------------------------------------------------------

_KNOWN_TERMS = re.compile(
    r"myalgic encephalomyelitis|chronic fatigue syndrome|post-?exertional malaise|"
    r"systemic exertion intolerance disease|ME/CFS|CFS/ME",
    re.IGNORECASE,
)


_NON_LETTERS = re.compile(r"[^a-z]")
_SILENT_ENDING = re.compile(r"(?:[^laeiouy]es|[^laeiouy]ed|[^laeiouy]e)$")
_VOWEL_GROUP = re.compile(r"[aeiouy]{1,2}")
_COMPOUND = re.compile(r"[-/]")


def count_syllables(word: str) -> int:
    """Syllables in an English word by vowel groups, with the usual silent-ending corrections."""
    letters = _NON_LETTERS.sub("", word.lower())
    if not letters:
        return 1  # numbers and symbols read as one beat
    if len(letters) <= 3:
        return 1
    trimmed = _SILENT_ENDING.sub("", letters)
    if trimmed.startswith("y"):
        trimmed = trimmed[1:]
    return max(1, len(_VOWEL_GROUP.findall(trimmed)))


def reading_grade(text: str) -> float:
    """Flesch-Kincaid grade: 0.39 words/sentence + 11.8 syllables/word - 15.59."""
    text = _KNOWN_TERMS.sub("ME", text or "")
    sentences = textfacts.split_sentences(text)
    tokens = textfacts.words(text)
    if not sentences or not tokens:
        return 0.0
    syllables = 0
    seen: dict[str, int] = {}
    for token in tokens:
        if token not in seen:
            # hyphenated and slashed compounds are read as their parts
            seen[token] = sum(count_syllables(part) for part in _COMPOUND.split(token) if part)
        syllables += seen[token]
    return 0.39 * (len(tokens) / len(sentences)) + 11.8 * (syllables / len(tokens)) - 15.59


# --- causal and curative language ---------------------------------------------------

_CURATIVE = re.compile(r"\b(cur(?:e|es|ed|ing)|curative|miracle|proves?|proved|proven|proof)\b", re.IGNORECASE)
_CAUSAL = re.compile(
    r"\b(caus(?:e|es|ed|ing)|leads? to|led to|results? in|resulted in|revers(?:e|es|ed|ing)|prevents?|prevented|"
    r"(?:is|are|was|were) effective|effective (?:treatment|therapy|intervention)s?|treats)\b",
    re.IGNORECASE,
)
_NEGATORS = r"(?:not|no|never|cannot|can't|don't|doesn't|didn't|nor|without|whether|unable|neither)"
_HEDGES_BEFORE = r"(?:may|might|could|if|unclear|unknown|possibly|perhaps)"
_NOUN_BEFORE = r"(?:the|a|an|its|their|possible|potential|underlying|unknown|root|main|likely|many|several|common|what)"


def _window_before(sentence: str, start: int, n_words: int = 8) -> list[str]:
    return [w.lower() for w in textfacts.words(sentence[:start])][-n_words:]


def _excused(sentence: str, match: re.Match[str], *, curative: bool) -> bool:
    before = _window_before(sentence, match.start())
    word = match.group(1).lower()
    after = sentence[match.end() : match.end() + 12].lower()
    if sentence.rstrip().endswith("?"):
        return True
    if any(re.fullmatch(_NEGATORS, w) for w in before):
        return True
    if word.startswith("proof") and after.lstrip("- ").startswith("of concept"):
        return True
    if word.startswith("caus"):
        if before and re.fullmatch(_NOUN_BEFORE, before[-1]) or after.startswith(" of"):
            return True  # "the cause of", "possible causes": a noun, not a claim
    if not curative and any(re.fullmatch(_HEDGES_BEFORE, w) for w in before):
        return True
    return False


def causal_claims(text: str, design: str, policy: CheckPolicy, *, causal: bool = True) -> list[str]:
    """Curative claims (never allowed) and, unless ``causal`` is false, causal claims the design cannot support."""
    found: list[str] = []
    for sentence in textfacts.split_sentences(text):
        for match in _CURATIVE.finditer(sentence):
            if not _excused(sentence, match, curative=True):
                found.append(match.group(0))
        if causal and design not in policy.effect_designs:
            for match in _CAUSAL.finditer(sentence):
                if not _excused(sentence, match, curative=False):
                    found.append(match.group(0))
    return found


_HEDGE_WORDS = re.compile(
    r"\b(may|might|could|suggests?|suggested|preliminary|small|limited|early|pilot|cannot|can't|not yet|"
    r"uncertain|unclear|possibly|appears?|seems?|more research|larger stud(?:y|ies)|needs? to be (?:confirmed|tested|repeated)|"
    r"only \d+|few)\b",
    re.IGNORECASE,
)


# --- the checks -----------------------------------------------------------------------


def _field_text(fields: Mapping[str, Any], names: tuple[str, ...]) -> str:
    parts: list[str] = []
    for name in names:
        value = fields.get(name)
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            parts.extend(item for item in value if isinstance(item, str))
    return "\n".join(p.strip() for p in parts if p and p.strip())


def _all_text(fields: Mapping[str, Any]) -> str:
    return _field_text(fields, TEXT_FIELDS + LIST_FIELDS)


def check_schema(fields: Mapping[str, Any]) -> CheckResult:
    problems = []
    for name in TEXT_FIELDS:
        if not isinstance(fields.get(name), str) or not fields[name].strip():
            problems.append(f"{name} must be non-empty text")
    for name in LIST_FIELDS:
        value = fields.get(name)
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            problems.append(f"{name} must be a list of non-empty texts")
    unexpected = sorted(set(fields) - set(TEXT_FIELDS) - set(LIST_FIELDS) - {"notice"})
    if unexpected:
        problems.append(f"unexpected fields: {', '.join(unexpected)}")
    return CheckResult("schema", not problems, "; ".join(problems) or "all fields present with the right types")


def check_source_text(source: SourceFacts) -> CheckResult:
    if source.has_body:
        return CheckResult("source_text", True, "abstract or methods text available")
    return CheckResult("source_text", False, "no abstract or methods text: nothing to ground a summary on")


def check_numbers(fields: Mapping[str, Any], source: SourceFacts) -> CheckResult:
    missing = []
    for number in textfacts.numbers_in(_all_text(fields)):
        if not textfacts.number_is_grounded(number, set(source.numbers)) and number not in missing:
            missing.append(number)
    if missing:
        return CheckResult("numbers_grounded", False, "numbers not found in the paper: " + ", ".join(missing))
    return CheckResult("numbers_grounded", True, "every number appears in the paper")


def check_causal(fields: Mapping[str, Any], source: SourceFacts, policy: CheckPolicy) -> CheckResult:
    claims = causal_claims(_field_text(fields, CAUSAL_SCANNED_FIELDS), source.design, policy)
    claims += causal_claims(_field_text(fields, CURATIVE_ONLY_FIELDS), source.design, policy, causal=False)
    if claims:
        unique = list(dict.fromkeys(c.lower() for c in claims))
        return CheckResult(
            "causal_language", False,
            f"claims a {source.design} design cannot support: " + ", ".join(f'"{c}"' for c in unique),
        )
    return CheckResult("causal_language", True, f"no causal or curative claims beyond a {source.design} design")


def check_hedging(fields: Mapping[str, Any], source: SourceFacts, policy: CheckPolicy) -> CheckResult:
    reasons = []
    if source.sample_size is not None and source.sample_size < policy.small_study_n:
        reasons.append(f"small study (n = {source.sample_size})")
    if source.uncontrolled:
        reasons.append("uncontrolled study")
    if not reasons:
        return CheckResult("hedging", True, "not a small or uncontrolled study")
    lead = _field_text(fields, LEAD_FIELDS)
    if _HEDGE_WORDS.search(lead):
        return CheckResult("hedging", True, " and ".join(reasons) + ": summary is hedged")
    return CheckResult("hedging", False, " and ".join(reasons) + ": summary states results without hedging")


def check_reading_grade(fields: Mapping[str, Any], policy: CheckPolicy) -> CheckResult:
    grade = reading_grade(_field_text(fields, PROSE_FIELDS))
    passed = grade <= policy.max_reading_grade
    return CheckResult("reading_grade", passed, f"Flesch-Kincaid grade {grade:.1f} (limit {policy.max_reading_grade:g})")


def check_length(fields: Mapping[str, Any], policy: CheckPolicy) -> CheckResult:
    problems = []
    for name, (low, high) in (
        ("plain_summary", policy.plain_summary_words),
        ("why_it_matters", policy.why_it_matters_words),
        ("does_not_prove", policy.does_not_prove_words),
    ):
        count = len(textfacts.words(fields.get(name) or "")) if isinstance(fields.get(name), str) else 0
        if not low <= count <= high:
            problems.append(f"{name} has {count} words (bounds {low}-{high})")
    for name, (low, high) in (
        ("key_findings", policy.key_findings_items),
        ("limitations", policy.limitations_items),
        ("open_questions", policy.open_questions_items),
    ):
        items = fields.get(name) if isinstance(fields.get(name), list) else []
        if not low <= len(items) <= high:
            problems.append(f"{name} has {len(items)} items (bounds {low}-{high})")
        for index, item in enumerate(items):
            count = len(textfacts.words(item)) if isinstance(item, str) else 0
            if count > policy.max_words_per_item:
                problems.append(f"{name}[{index}] has {count} words (limit {policy.max_words_per_item})")
    return CheckResult("length", not problems, "; ".join(problems) or "lengths within bounds")


def check_advice(fields: Mapping[str, Any]) -> CheckResult:
    phrases = textfacts.advice_phrases(_all_text(fields))
    if phrases:
        unique = list(dict.fromkeys(p.lower() for p in phrases))
        return CheckResult("advice", False, "gives advice: " + ", ".join(f'"{p}"' for p in unique))
    return CheckResult("advice", True, "no medical advice")


def _trigrams(text: str) -> set[tuple[str, str, str]]:
    tokens = [w.lower() for w in textfacts.words(text)]
    return {tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)}  # type: ignore[misc]


def check_instructions(fields: Mapping[str, Any], source: SourceFacts) -> CheckResult:
    text = _all_text(fields)
    phrases = textfacts.instruction_phrases(text)
    if phrases:
        return CheckResult("instructions", False, "instruction-like text in the summary: " +
                           ", ".join(f'"{p}"' for p in dict.fromkeys(phrases)))
    if source.instruction_sentences:
        rest = source.text
        for sentence in source.instruction_sentences:
            rest = rest.replace(sentence, " ")
        injected_only = set().union(*(_trigrams(s) for s in source.instruction_sentences)) - _trigrams(rest)
        echoed = sorted(" ".join(gram) for gram in _trigrams(text) & injected_only)
        if echoed:
            return CheckResult("instructions", False,
                               "summary repeats an instruction embedded in the paper text: " + "; ".join(echoed[:3]))
        return CheckResult("instructions", True, "the paper text contains instruction-like sentences; none were followed")
    return CheckResult("instructions", True, "no instruction-like text")


def run_checks(fields: Mapping[str, Any], source: SourceFacts, *,
               policy: CheckPolicy | None = None) -> list[CheckResult]:
    """All checks, in a fixed order. A summary is publishable only if every one passed."""
    policy = policy or CheckPolicy()
    results = [
        check_schema(fields),
        check_source_text(source),
        check_numbers(fields, source),
        check_causal(fields, source, policy),
        check_hedging(fields, source, policy),
        check_reading_grade(fields, policy),
        check_length(fields, policy),
        check_advice(fields),
        check_instructions(fields, source),
    ]
    return results


def verdict(results: list[CheckResult]) -> tuple[str, list[str]]:
    """``ok`` when every check passed, else ``flagged`` with one reason per failed check."""
    reasons = [f"{r.name}: {r.detail}" for r in results if not r.passed]
    return ("flagged" if reasons else "ok"), reasons
