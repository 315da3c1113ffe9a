"""The offline backend: a deterministic summariser that copies and frames, never invents.

It fills the same fields as an LLM. Findings are the abstract's own sentences
(chosen by the abstract's section labels, else by cue phrases); the framing
sentences are fixed wording picked from the study design, the sample size and
the PEM label, and contain no number that is not in the paper. Sentences that
read as instructions, give advice, or make claims the design cannot support are
never copied. Every stored output says it is extractive (see
``schema.EXTRACTIVE_NOTICE``).
"""

from __future__ import annotations

import re

from generator import checks, textfacts
from generator.schema import PaperInput, SummaryFields

EXTRACTIVE_BACKEND = "extractive"
EXTRACTIVE_MODEL = "extractive-v1"

DESIGN_PHRASES = {
    "rct": "a randomised controlled trial, a study that put people into groups by chance",
    "meta_analysis": "a meta-analysis, a study that pools the results of earlier studies",
    "review": "a review of earlier studies",
    "cohort": "a cohort study, which follows a group of people over time",
    "case_control": "a case-control study, which compares people who have an illness with people who do not",
    "cross_sectional": "a cross-sectional study, which looks at people at one point in time",
    "case_report": "a case report, which describes one or a few patients",
    "protocol": "a study protocol, a plan for a study that has no results yet",
    "commentary": "a commentary, which gives the authors' views rather than new data",
    "case_definition": "a paper about how ME/CFS is defined",
}

WHY_IT_MATTERS = {
    "rct": "Trials like this test whether a treatment helps. Their results carry weight once others repeat them.",
    "meta_analysis": "Pooling many studies gives a wider view than any one study can.",
    "review": "Reviews gather what earlier studies found, which helps to see the wider picture.",
    "cohort": "Following people over time can show which changes come first.",
    "case_control": "Comparing groups can point to differences worth testing in later studies.",
    "cross_sectional": "A snapshot like this can point to links worth testing in later studies.",
    "case_report": "Single cases can raise new ideas, but they do not show what is typical.",
    "protocol": "A published plan lets readers check later that the study was done as planned.",
    "commentary": "Views like these shape debate, but they do not add new data.",
    "case_definition": "How ME/CFS is defined decides who ends up in studies, and so what studies find.",
}

DOES_NOT_PROVE = {
    "rct": "One trial cannot show that the results hold for everyone with ME/CFS, or over the long term.",
    "meta_analysis": "Pooled results cannot show that a treatment works for each person, and they are only as good as the studies pooled.",
    "review": "A review does not test anything new by itself.",
    "case_report": "A single case cannot show what is typical, or what brought about any change.",
    "protocol": "A protocol reports no results, so it cannot show whether anything works.",
    "commentary": "An opinion piece brings no new data, so it cannot settle the questions it raises.",
    "case_definition": "A definition paper cannot show how well the definition works in practice.",
}
OBSERVATIONAL_DOES_NOT_PROVE = "This study cannot show that one thing causes another. It can only show links."

DESIGN_LIMITATIONS = {
    "rct": "Results from one trial need to be repeated by other teams.",
    "meta_analysis": "Pooled results depend on the quality of the studies included.",
    "review": "A review is only as strong as the studies it includes.",
    "cohort": "Other factors, not studied here, may explain the links found.",
    "case_control": "People with and without the illness may differ in other ways too, and those differences could explain the results.",
    "cross_sectional": "Everything was measured at one time, so it cannot show what came first.",
    "case_report": "Very few people were described, so the results may not apply to others.",
    "protocol": "No results are reported yet.",
    "commentary": "It presents opinions, not new data.",
}

_RESULT_CUES = re.compile(
    r"\b(we found|found that|showed|shows|revealed|observed|was associated|were associated|associated with|"
    r"significant(?:ly)?|higher|lower|increased|decreased|differ(?:ed|ences?)|compared with|reported)\b",
    re.IGNORECASE,
)
_CONCLUSION_CUES = re.compile(
    r"\b(in conclusion|we conclude|conclusions?|these (?:findings|results|data)|our (?:findings|results|data)|"
    r"suggests?|indicates?|highlights?)\b",
    re.IGNORECASE,
)
_OBJECTIVE_CUES = re.compile(
    r"\b(the aim|aimed to|we aimed|objective|purpose|we investigated|we examined|we assessed|we sought|this study)\b",
    re.IGNORECASE,
)


def _usable(sentence: str, design: str, policy: checks.CheckPolicy) -> bool:
    """A sentence the summariser may copy: short enough, no advice, no instructions, no overclaiming."""
    count = len(textfacts.words(sentence))
    if count < 5 or count > policy.max_words_per_item:
        return False
    if textfacts.instruction_phrases(sentence) or textfacts.advice_phrases(sentence):
        return False
    return not checks.causal_claims(sentence, design, policy)


def _tagged_sentences(paper: PaperInput) -> list[tuple[str, str]]:
    """(kind, sentence) for the abstract, kind from its section label or 'other'."""
    parts = textfacts.labelled_parts(paper.abstract, list(paper.sections) or None)
    return [(part.label, sentence) for part in parts for sentence in textfacts.split_sentences(part.text)]


def _pick(tagged: list[tuple[str, str]], kind: str, cues: re.Pattern[str], usable, limit: int,
          *, last: bool = False, skip_opening: bool = False) -> list[str]:
    """Sentences under the wanted section label; without such a label, sentences with the kind's cue phrases.

    ``skip_opening`` passes over the first two sentences of a long unlabelled
    abstract, which set out background rather than findings.
    """
    if any(k == kind for k, _ in tagged):
        chosen = [s for k, s in tagged if k == kind and usable(s)]
    else:
        pool = tagged[2:] if skip_opening and len(tagged) >= 6 else tagged
        chosen = [s for k, s in pool if k != "methods" and cues.search(s) and usable(s)]
    return chosen[-limit:] if last else chosen[:limit]


def _grade_ok(texts: list[str], policy: checks.CheckPolicy) -> bool:
    return checks.reading_grade("\n".join(texts)) <= policy.max_reading_grade


def summarise(paper: PaperInput, policy: checks.CheckPolicy | None = None,
              facts: checks.SourceFacts | None = None) -> SummaryFields:
    """Fill the summary fields from the paper's own sentences and design-specific framing."""
    policy = policy or checks.CheckPolicy()
    facts = facts or checks.source_facts(paper.title, paper.abstract, paper.methods, paper.labels)
    design = facts.design
    labels = paper.labels or {}
    pem = labels.get("pem")
    n = facts.sample_size
    small = n is not None and n < policy.small_study_n

    def usable(sentence: str) -> bool:
        return _usable(sentence, design, policy)

    tagged = _tagged_sentences(paper)
    results = _pick(tagged, "results", _RESULT_CUES, usable, 3, skip_opening=True)
    conclusions = _pick(tagged, "conclusions", _CONCLUSION_CUES, usable, 1, last=True)
    objectives = _pick(tagged, "objective", _OBJECTIVE_CUES, usable, 1)
    if not results and not conclusions:
        fallback = [s for k, s in tagged if k not in ("background", "methods") and usable(s)]
        results = fallback[-2:]

    # plain_summary: fixed framing, then copied sentences only while the prose stays readable
    lead = [f"This paper is {DESIGN_PHRASES[design]}." if design in DESIGN_PHRASES else "This paper reports a study."]
    if n is not None and textfacts.normalise_number(str(n)) in facts.numbers:
        lead.append(f"It included {n} people.")
    if small:
        lead.append("It was a small study, so the results may not hold for everyone.")
    elif facts.uncontrolled:
        lead.append("It had no comparison group, so it cannot show what brought about any change.")
    elif design in checks.CheckPolicy().effect_designs:
        lead.append("Its results may still need to be confirmed by other studies.")
    else:
        lead.append("It can point to links, but it may not explain them.")
    if not paper.has_body:
        lead.append("No abstract was available, so there is little to summarise.")

    why = [WHY_IT_MATTERS.get(design, "It adds to what is known about ME/CFS.")]
    if pem == "required":
        why.append("Everyone studied had to have post-exertional malaise, the hallmark symptom of ME/CFS.")
    elif pem == "not_required":
        why.append("It did not require post-exertional malaise, so some people studied may not have ME/CFS as defined today.")
    does_not_prove = DOES_NOT_PROVE.get(design, OBSERVATIONAL_DOES_NOT_PROVE)

    for label, sentences in (("The authors' aim, in their words:", objectives), ("The authors conclude:", conclusions)):
        if sentences:
            candidate = lead + [f"{label} “{sentences[0]}”"]
            if _grade_ok(candidate + why + [does_not_prove], policy):
                lead = candidate

    findings = list(dict.fromkeys(results + conclusions))[:5]

    limitations = []
    if small:
        limitations.append("It was a small study, with fewer than thirty people.")
    if facts.uncontrolled:
        limitations.append("There was no control group to compare against.")
    if design in DESIGN_LIMITATIONS:
        limitations.append(DESIGN_LIMITATIONS[design])
    if pem == "not_required":
        limitations.append("People did not need post-exertional malaise to take part.")
    elif pem == "unclear":
        limitations.append("The paper does not make clear whether post-exertional malaise was required.")
    if not paper.methods:
        limitations.append("This summary is based on the abstract only.")

    questions = []
    if small:
        questions.append("Would the results hold in a larger group?")
    if facts.uncontrolled:
        questions.append("Would a study with a control group find the same?")
    if design not in checks.CheckPolicy().effect_designs and design not in ("protocol", "commentary", "review"):
        questions.append("Is the link a cause, or do other factors explain it?")

    return SummaryFields(
        plain_summary=" ".join(lead),
        why_it_matters=" ".join(why),
        key_findings=findings,
        limitations=limitations[:5],
        does_not_prove=does_not_prove,
        open_questions=questions[:4],
    )
