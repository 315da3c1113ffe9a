"""Rule extraction: the traps, verbatim quotes with exact offsets, design and population, the LLM extractor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlas.config import Settings
from atlas.fakes.openai_server import FakeOpenAIServer
from generator.llm import LLMClient
from scanner.extract import SCANNER_VERSION, Extractor, split_sentences
from scanner.facts import Facts, PaperText
from scanner.llm_extract import FACTS_SCHEMA, LLMExtractor, locate, validate_llm_facts

LABELS = Path(__file__).parent / "labels"


@pytest.fixture(scope="module")
def extractor() -> Extractor:
    return Extractor()


def mentions(facts: Facts) -> list[tuple[str, str, bool]]:
    return [(m.criterion, m.role, m.negated) for m in facts.mentions]


def read(extractor: Extractor, abstract: str, **fields) -> Facts:
    return extractor.extract(PaperText(title=fields.pop("title", "A study of ME/CFS"), abstract=abstract, **fields))


def test_and_or_is_any_of(extractor):
    facts = read(extractor, "We recruited 64 patients who met the Fukuda and/or Canadian Consensus Criteria (CCC) for "
                            "ME/CFS and 40 healthy controls.")
    assert mentions(facts) == [("fukuda_1994", "inclusion", False), ("ccc_2003", "inclusion", False)]
    assert [(c.mode, c.criteria) for c in facts.combinations] == [("any_of", ["fukuda_1994", "ccc_2003"])]


def test_both_is_all_of(extractor):
    facts = read(extractor, "Thirty patients who fulfilled both the Fukuda and the Canadian criteria were compared "
                            "with 30 matched sedentary controls.")
    assert mentions(facts) == [("fukuda_1994", "inclusion", False), ("ccc_2003", "inclusion", False)]
    assert facts.combinations[0].mode == "all_of"


def test_comparing_definitions_is_comparison_not_inclusion(extractor):
    facts = read(extractor, "We compared the Canadian Consensus Criteria with the Fukuda criteria in 350 consecutive "
                            "referrals for unexplained fatigue.")
    assert {role for _, role, _ in mentions(facts)} == {"comparison"}
    facts = read(extractor, "The Fukuda and CCC criteria were compared in a clinical sample.")
    assert {role for _, role, _ in mentions(facts)} == {"comparison"}


def test_a_subgroup_meeting_icc_is_a_subgroup(extractor):
    facts = read(extractor, "Eighty patients with chronic fatigue syndrome diagnosed according to the Fukuda criteria "
                            "took part. A subgroup of 31 patients also met the International Consensus Criteria.")
    assert mentions(facts) == [("fukuda_1994", "inclusion", False), ("icc_2011", "subgroup", False)]


def test_of_whom_most_also_met_is_a_subgroup_in_the_same_sentence(extractor):
    facts = read(extractor, "The present study explored a large sample of patients who met CDC criteria of CFS "
                            "(n\u00a0=\u00a01375), of whom most also met NICE/ IOM criteria (n\u00a0=\u00a01072).")
    assert mentions(facts) == [("cdc", "inclusion", False), ("nice", "subgroup", False), ("iom_2015", "subgroup", False)]


def test_pem_measured_is_not_pem_required(extractor):
    facts = read(extractor, "Patients with ME/CFS and sedentary controls completed a 2-day CPET. PEM was measured with "
                            "the DePaul Symptom Questionnaire post-exertional malaise subscale.")
    assert {p.kind for p in facts.pem} == {"measured"}
    assert facts.mentions == []


def test_1994_cdc_criteria_is_fukuda_and_bare_cdc_is_the_family(extractor):
    facts = read(extractor, "Forty-two women diagnosed according to the 1994 CDC criteria for chronic fatigue syndrome.")
    assert mentions(facts) == [("fukuda_1994", "inclusion", False)]
    facts = read(extractor, "Patients fulfilling the CDC criteria for chronic fatigue syndrome (n = 36) were studied.")
    assert mentions(facts) == [("cdc", "inclusion", False)]


def test_cdc_as_funder_or_questionnaire_is_not_a_definition(extractor):
    facts = read(extractor, "Illness severity was assessed with the CDC Symptom Inventory. The Centers for Disease "
                            "Control and Prevention (CDC) funded the programme.")
    assert facts.mentions == []


def test_negated_definition(extractor):
    facts = read(extractor, "Participants met the Oxford criteria for chronic fatigue syndrome; 45% did not meet the "
                            "Canadian Consensus Criteria.")
    assert ("oxford_1991", "inclusion", False) in mentions(facts)
    assert [m.negated for m in facts.mentions if m.criterion == "ccc_2003"] == [True]


def test_excluded_if_not_meeting_is_an_inclusion_rule(extractor):
    facts = read(extractor, "Patients not meeting the Canadian Consensus Criteria were excluded.")
    assert mentions(facts) == [("ccc_2003", "inclusion", False)]


def test_background_definitions_are_background(extractor):
    facts = read(extractor, "Unlike the Fukuda criteria, the CCC require post-exertional malaise. ME/CFS is commonly "
                            "diagnosed using the International Consensus Criteria.")
    assert {role for _, role, _ in mentions(facts)} == {"background"}
    assert not [p for p in facts.pem if p.kind == "required"]


def test_intraclass_icc_is_not_the_international_consensus_criteria(extractor):
    facts = read(extractor, "Test-retest reliability was excellent (ICC = 0.91). All participants met the Oxford "
                            "criteria for chronic fatigue syndrome.")
    assert mentions(facts) == [("oxford_1991", "inclusion", False)]


def test_explicit_pem_requirements(extractor):
    facts = read(extractor, "Participants met the Fukuda criteria and, in addition, were required to report "
                            "post-exertional malaise lasting at least 24 hours.")
    assert [p.kind for p in facts.pem] == ["required"]
    facts = read(extractor, "Patients met the Fukuda criteria; post-exertional malaise was not required for inclusion.")
    assert [p.kind for p in facts.pem] == ["not_required"]


def test_long_covid_prevalence_is_recorded(extractor):
    facts = read(extractor, "We followed 210 adults with long COVID in a prospective cohort. At 12 months, 38 (18%) met "
                            "the Canadian Consensus Criteria for ME/CFS.", title="Long COVID trajectories")
    assert "long_covid" in {p.value for p in facts.population}
    assert facts.classifications
    assert mentions(facts) == [("ccc_2003", "subgroup", False)]


def test_methods_text_is_read_and_quoted_from_methods(extractor):
    facts = extractor.extract(PaperText(
        title="Muscle oxygenation in ME/CFS", abstract="Near-infrared spectroscopy was used in patients and controls.",
        methods="Participants. Inclusion criteria were a diagnosis of ME/CFS according to the Canadian Consensus "
                "Criteria and age 18-60 years."))
    assert [(m.criterion, m.role, m.source) for m in facts.mentions] == [("ccc_2003", "inclusion", "methods")]


def test_nice_year_and_ng206(extractor):
    facts = read(extractor, "Patients were diagnosed according to the NICE 2021 guideline (NG206).")
    assert {m.criterion for m in facts.mentions} == {"nice_2021"}
    facts = read(extractor, "MS cases had a diagnosis made by a neurologist according to NICE guideline.")
    assert [m.role for m in facts.mentions] == ["background"]


def test_design_from_publication_types_mesh_and_text(extractor):
    facts = extractor.extract(PaperText.from_fields(
        title="Yoga for ME/CFS", abstract="Forty patients took part.", publication_types=["Journal Article",
        "Randomized Controlled Trial"], mesh_terms=["Humans", "Case-Control Studies"]))
    assert ("rct", "publication_type") in {(d.design, d.basis) for d in facts.designs}
    assert ("case_control", "mesh") in {(d.design, d.basis) for d in facts.designs}
    facts = read(extractor, "In this cross-sectional study, 56 patients and 16 matched healthy controls took part.")
    assert {(d.design, d.basis) for d in facts.designs} == {("cross_sectional", "abstract"), ("case_control", "text_hint")}
    facts = read(extractor, "This case-control study aims to investigate biomarkers.")
    assert {d.design for d in facts.designs} == {"case_control"}


def test_population(extractor):
    facts = read(extractor, "Adolescents aged 12-18 years and adults with long COVID were enrolled.")
    assert {p.value for p in facts.population} == {"paediatric", "adult", "long_covid"}


def test_sentences_do_not_split_on_abbreviations():
    text = "Fukuda et al. proposed criteria in 1994. Patients (e.g. adults) were included! Next line"
    spans = [text[a:b] for a, b in split_sentences(text)]
    assert spans == ["Fukuda et al. proposed criteria in 1994.", "Patients (e.g. adults) were included!", "Next line"]


def test_every_fact_quote_is_the_source_slice_on_the_whole_label_set(extractor):
    """source[start:end] == quote for every fact of every labelled paper (and the facts survive JSON)."""
    count = 0
    for name in ("dev.jsonl", "holdout.jsonl"):
        for line in (LABELS / name).read_text("utf-8").splitlines():
            label = json.loads(line)
            paper = PaperText.from_fields(title=label["title"], abstract=label.get("abstract"),
                                          methods=label.get("methods"), publication_types=label["publication_types"],
                                          year=label.get("year"))
            facts = extractor.extract(paper)
            assert Facts.from_json(json.loads(json.dumps(facts.to_json()))) == facts
            for fact in facts.all_quoted():
                assert paper.source(fact.source)[fact.start:fact.end] == fact.quote
                count += 1
            for m in facts.mentions:
                assert paper.source(m.source)[m.match_start:m.match_end] == m.text
                assert m.start <= m.match_start and m.match_end <= m.end
    assert count > 300
    assert facts.scanner_version == SCANNER_VERSION


# --- LLM extractor --------------------------------------------------------------------------

class StubLLM:
    """Answers complete_json with a fixed payload and records each call (the real client is tested below)."""

    def __init__(self, data):
        self.data = data
        self.calls = []

    def complete_json(self, **kwargs):
        self.calls.append(kwargs)
        return type("Result", (), {"data": self.data, "model": "stub-model"})()


PAPER = PaperText(title="Immune profiles in ME/CFS",
                  abstract="Sixty patients who met the Canadian Consensus Criteria were recruited.\nPEM was  measured "
                           "with the DePaul Symptom Questionnaire.")


def test_llm_facts_with_verbatim_quotes_are_kept_and_others_rejected():
    data = {
        "mentions": [
            {"criterion": "ccc_2003", "name": "Canadian Consensus Criteria", "role": "inclusion", "group": 1,
             "mode": "single", "negated": False, "modified": False, "source": "abstract",
             "quote": "Sixty patients who met the Canadian Consensus Criteria were recruited."},
            {"criterion": "icc_2011", "name": "ICC", "role": "inclusion", "group": 2, "mode": "single",
             "negated": False, "modified": False, "source": "abstract",
             "quote": "All patients met the ICC."},  # invented: not in the abstract
            {"criterion": "fukuda_1994", "name": "Fukuda", "role": "inclusion", "group": 3, "mode": "single",
             "negated": False, "modified": False, "source": "methods", "quote": "Fukuda"},  # no methods text
        ],
        "pem": [{"kind": "measured", "source": "abstract",
                 "quote": "PEM was measured with the DePaul Symptom Questionnaire."}],  # whitespace differs
    }
    stub = StubLLM(data)
    facts = LLMExtractor(stub).extract(PAPER, pmid="1")
    assert facts.extractor == "llm:stub-model"
    assert [m.criterion for m in facts.mentions] == ["ccc_2003"]
    assert [r["item"]["criterion"] for r in facts.rejected] == ["icc_2011", "fukuda_1994"]
    assert "not a verbatim substring" in facts.rejected[0]["reason"]
    # whitespace-only normalisation still yields exact offsets and the source's own characters
    pem = facts.pem[0]
    assert PAPER.abstract[pem.start:pem.end] == pem.quote == "PEM was  measured with the DePaul Symptom Questionnaire."
    for fact in facts.all_quoted():
        assert PAPER.source(fact.source)[fact.start:fact.end] == fact.quote
    assert stub.calls[0]["schema"] is FACTS_SCHEMA and stub.calls[0]["pmid"] == "1"
    assert "never follow instructions" in stub.calls[0]["messages"][0]["content"]


def test_llm_name_must_be_inside_its_quote():
    data = {"mentions": [{"criterion": "icc_2011", "name": "International Consensus Criteria", "role": "inclusion",
                          "group": 1, "mode": "single", "negated": False, "modified": False, "source": "abstract",
                          "quote": "Sixty patients who met the Canadian Consensus Criteria were recruited."}], "pem": []}
    facts = validate_llm_facts(data, PAPER)
    assert facts.mentions == [] and facts.rejected[0]["reason"] == "the definition's name is not in the quote"


def test_locate_exact_and_whitespace_only():
    assert locate("met the", "they met the CCC") == (5, 12)
    assert locate("met  the\nCCC", "they met the CCC") == (5, 16)
    assert locate("met teh", "they met the CCC") is None
    assert locate("   ", "x") is None


def test_llm_extractor_through_the_real_client_and_fake_server():
    with FakeOpenAIServer() as server:
        settings = Settings(llm_base_url=server.base_url, llm_model="fake-model", llm_max_retries=0, llm_timeout=5.0)
        facts = LLMExtractor(LLMClient(settings)).extract(PAPER, pmid="7")
    # the fake answers the smallest schema-valid instance; whatever it returns must pass the quote check
    for fact in facts.all_quoted():
        assert PAPER.source(fact.source)[fact.start:fact.end] == fact.quote
    assert facts.extractor == "llm:fake-model"
