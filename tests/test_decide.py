"""Decisions: the policy applied to facts, for every trap; a policy change changes the decision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scanner.decide import decide, decide_json
from scanner.extract import Extractor
from scanner.facts import PaperText
from scanner.policy import load_policy, parse_policy

POLICY_PATH = Path(__file__).resolve().parent.parent / "policies" / "v0.1.yaml"


@pytest.fixture(scope="module")
def policy():
    return load_policy(POLICY_PATH)


@pytest.fixture(scope="module")
def extractor():
    return Extractor()


def classify(extractor, policy, abstract, title="A study of ME/CFS", **fields):
    paper = PaperText.from_fields(title=title, abstract=abstract, **fields)
    decision = decide(extractor.extract(paper), policy)
    for item in decision.evidence:
        assert item["quote"] in paper.source(item["source"])
    return decision


CASES = [
    ("and/or with a non-PEM definition",
     "We recruited 64 patients who met the Fukuda and/or Canadian Consensus Criteria (CCC) and 40 controls.",
     ["fukuda_1994", "ccc_2003"], "not_required"),
    ("both definitions",
     "Thirty patients who fulfilled both the Fukuda and the Canadian criteria were compared with 30 matched controls.",
     ["fukuda_1994", "ccc_2003"], "required"),
    ("comparison of definitions",
     "We compared the Canadian Consensus Criteria with the Fukuda criteria in 350 consecutive referrals.",
     ["not_stated"], "unclear"),
    ("subgroup ICC does not set the badge",
     "Eighty patients diagnosed according to the Fukuda criteria took part. A subgroup of 31 patients also met the "
     "International Consensus Criteria.", ["fukuda_1994"], "not_required"),
    ("subgroup only", "Of 120 patients with chronic fatigue, 40 (33%) met the Canadian Consensus Criteria.",
     ["not_stated"], "unclear"),
    ("PEM measured only",
     "Patients with ME/CFS completed a 2-day CPET; PEM was measured with the DePaul Symptom Questionnaire.",
     ["not_stated"], "unclear"),
    ("1994 CDC", "Forty-two women diagnosed according to the 1994 CDC criteria were studied.", ["fukuda_1994"],
     "not_required"),
    ("bare CDC", "Patients fulfilling the CDC criteria for chronic fatigue syndrome (n = 36) took part.",
     ["fukuda_1994"], "not_required"),
    ("negated CCC", "Participants met the Oxford criteria; 45% did not meet the Canadian Consensus Criteria.",
     ["oxford_1991"], "not_required"),
    ("excluded if not meeting", "Patients not meeting the Canadian Consensus Criteria were excluded.", ["ccc_2003"],
     "required"),
    ("own PEM requirement", "Participants met the Fukuda criteria and, in addition, were required to report "
     "post-exertional malaise lasting at least 24 hours.", ["fukuda_1994"], "required"),
    ("PEM explicitly not required", "Patients met the Fukuda criteria; post-exertional malaise was not required for "
     "inclusion.", ["fukuda_1994"], "not_required"),
    ("own PEM requirement without a definition", "Only patients reporting post-exertional malaise were included.",
     ["not_stated"], "required"),
    ("ICC", "All 48 patients fulfilled the International Consensus Criteria.", ["icc_2011"], "required"),
    ("IOM", "All participants met the 2015 Institute of Medicine criteria for ME/CFS.", ["iom_2015"], "required"),
    ("modified CCC", "Patients met a modified version of the Canadian Consensus Criteria.", ["ccc_2003"], "unclear"),
    ("ICD code", "Cases were identified by the ICD-10 code G93.3 in a national registry.", ["other"], "unclear"),
]


@pytest.mark.parametrize("name,abstract,criteria,pem", CASES, ids=[c[0] for c in CASES])
def test_traps(extractor, policy, name, abstract, criteria, pem):
    decision = classify(extractor, policy, abstract)
    assert (decision.criteria, decision.pem) == (criteria, pem)


def test_long_covid_classification_does_not_set_the_badge(extractor, policy):
    decision = classify(extractor, policy, "ME/CFS diagnosis was based on the International Consensus Criteria (ICC). "
                        "Only a minority of long COVID cases (18.8%) satisfied criteria for ME/CFS.",
                        title="Intersections of Long COVID and chronic fatigue syndrome")
    assert (decision.criteria, decision.pem) == (["not_stated"], "unclear")
    assert any(e["label"].startswith("long COVID study") for e in decision.evidence)


def test_reviews_commentaries_and_case_definitions_are_not_applicable(extractor, policy):
    review = classify(extractor, policy, "In this narrative review we discuss the Fukuda criteria and the Canadian "
                      "Consensus Criteria.", title="Case definitions of ME/CFS: a narrative review")
    assert (review.criteria, review.pem, review.design) == (["not_stated"], "not_applicable", "review")
    comment = classify(extractor, policy, None, title="Commentary: Efficacy of rituximab: a meta-analysis")
    assert (comment.pem, comment.design) == ("not_applicable", "commentary")
    definition = classify(extractor, policy, "We present a systematic clinical working case definition.",
                          title="Myalgic encephalomyelitis: clinical working case definition")
    assert (definition.pem, definition.design) == ("not_applicable", "case_definition")
    assert definition.evidence_level == policy.evidence_levels["case_definition"]
    essay = classify(extractor, policy, "Using evidence from both the biological and clinical sciences, this paper "
                     "explains that graded exercise therapy can be undertaken safely.", title="Exercise in CFS")
    assert (essay.pem, essay.design) == ("not_applicable", "review")
    primary = classify(extractor, policy, "Previous systematic reviews were inconclusive. We recruited 40 patients "
                       "and 40 healthy controls.", title="Cytokines in ME/CFS")
    assert (primary.pem, primary.design) == ("unclear", "case_control")


def test_protocols_are_decided_from_planned_inclusion(extractor, policy):
    decision = classify(extractor, policy, "Adults aged 18-65 who meet the Canadian Consensus Criteria will be "
                        "randomised to low-dose naltrexone or placebo.",
                        title="Low-dose naltrexone for ME/CFS: protocol for a randomised trial")
    assert (decision.criteria, decision.pem, decision.design) == (["ccc_2003"], "required", "protocol")


def test_publication_type_outranks_text_and_sets_the_evidence_level(extractor, policy):
    decision = classify(extractor, policy, "Patients met the CCC. Healthy controls were matched.",
                        publication_types=["Journal Article", "Randomized Controlled Trial"])
    assert decision.design == "rct" and decision.evidence_level == "2 - randomised controlled trial"


def test_a_policy_change_changes_the_decision_from_the_same_facts(extractor, policy):
    facts = extractor.extract(PaperText(abstract="All patients met the Fukuda criteria and were recruited."))
    assert decide(facts, policy).pem == "not_required"
    text = POLICY_PATH.read_text("utf-8").replace(
        "    requires_pem: false\n    reason: \"PEM over 24 hours", "    requires_pem: true\n    reason: \"PEM over 24 hours")
    assert decide(facts, parse_policy(text.encode())).pem == "required"
    lenient = POLICY_PATH.read_text("utf-8").replace("  any_of: every_alternative", "  any_of: any_alternative")
    either = extractor.extract(PaperText(abstract="Patients met the Fukuda and/or Canadian criteria."))
    assert decide(either, policy).pem == "not_required"
    assert decide(either, parse_policy(lenient.encode())).pem == "required"


def test_decision_from_stored_json_equals_decision_from_facts(extractor, policy):
    facts = extractor.extract(PaperText(title="T", abstract="Patients met the CCC and/or the ICC. PEM was measured "
                                                         "with the DSQ."))
    stored = json.loads(json.dumps(facts.to_json()))
    assert decide_json(stored, policy) == decide(facts, policy)


def test_evidence_labels_explain_the_badge(extractor, policy):
    decision = classify(extractor, policy, "Participants met the Fukuda criteria and, in addition, were required to "
                        "report post-exertional malaise. PEM severity was assessed with the DSQ.")
    labels = [e["label"] for e in decision.evidence]
    assert "inclusion: fukuda_1994" in labels
    assert "PEM required by the study's own inclusion rule" in labels
    assert all(e["source"] == "abstract" for e in decision.evidence)
