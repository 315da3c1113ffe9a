"""Decision: a policy applied to stored facts. Pure, and cheap enough for 100,000 papers in seconds.

No text is read here: every quote in a decision's evidence comes from the facts.

Choices worth knowing:
- ``criteria`` lists the definitions named for *inclusion* (negated mentions,
  exclusion criteria, comparisons, subgroups and background do not count); ``["not_stated"]`` when none.
- Designs with no participants of their own (the policy's
  ``not_applicable_designs``: reviews, meta-analyses, commentaries, case
  definitions) get ``not_applicable`` and ``["not_stated"]``. Protocols are
  decided like any study: their planned inclusion criteria are still criteria.
- Separate inclusion statements are a conjunction (every participant met each);
  within one phrase the extractor's combination (any_of / all_of) applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scanner.facts import Facts, Mention
from scanner.policy import CATALOGUE_IDS, NOT_STATED, Policy

_CATALOGUE = frozenset(CATALOGUE_IDS)


@dataclass(slots=True)
class Decision:
    criteria: list[str]
    pem: str
    design: str
    evidence_level: str
    evidence: list[dict[str, str]] = field(default_factory=list)
    population: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"criteria": self.criteria, "pem": self.pem, "design": self.design,
                "evidence_level": self.evidence_level, "evidence": self.evidence, "population": self.population}


class _Evidence:
    """Evidence items in order, without repeating the same (label, quote)."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []
        self._seen: set[tuple[str, str]] = set()

    def add(self, label: str, quote: str, source: str) -> None:
        key = (label, quote)
        if key not in self._seen:
            self._seen.add(key)
            self.items.append({"label": label, "quote": quote, "source": source})


def _combine_any(values: list[bool | None], rule: str) -> bool | None:
    if rule == "every_alternative":
        if all(v is True for v in values):
            return True
        return False if any(v is False for v in values) else None
    if any(v is True for v in values):
        return True
    return False if all(v is False for v in values) else None


def _combine_all(values: list[bool | None], rule: str) -> bool | None:
    if rule == "any_member":
        if any(v is True for v in values):
            return True
        return False if all(v is False for v in values) else None
    if all(v is True for v in values):
        return True
    return False if any(v is False for v in values) else None


def pick_design(facts: Facts, policy: Policy):
    """The design cue that wins: best basis first (publication type over title over text), then design order."""
    if not facts.designs:
        return None
    basis_rank = {b: i for i, b in enumerate(policy.design_basis_priority)}
    design_rank = {d: i for i, d in enumerate(policy.design_priority)}
    return min(facts.designs, key=lambda d: (basis_rank.get(d.basis, 99), design_rank.get(d.design, 99)))


def decide(facts: Facts, policy: Policy) -> Decision:
    """Apply ``policy`` to ``facts``: criteria, PEM badge, design, evidence level and evidence quotes."""
    rules = policy.rules
    requires = policy.requires_pem
    evidence = _Evidence()
    population = list(dict.fromkeys(p.value for p in facts.population))

    cue = pick_design(facts, policy)
    design = cue.design if cue else "unknown"
    level = policy.evidence_levels.get(design, policy.evidence_levels["unknown"])
    if design in rules.not_applicable_designs:
        evidence.add(f"design: {design} (no participants of its own)", cue.quote, cue.source)
        return Decision([NOT_STATED], "not_applicable", design, level, evidence.items, population)

    def resolve(key: str) -> str:
        if key in _CATALOGUE:
            return key
        family = policy.ambiguous.get(key)
        return family.resolve(facts.year) if family else "other"

    long_covid_classifying = (rules.long_covid_prevalence_is_subgroup and "long_covid" in population
                              and bool(facts.classifications))
    compared: set[str] = set()
    if not rules.compared_definitions_set_badge:
        compared = {resolve(m.criterion) for m in facts.mentions if m.role == "comparison" and not m.negated}
    groups: dict[int, list[Mention]] = {}
    subgroup_mentions: list[Mention] = []
    for m in facts.mentions:
        if m.negated:
            continue
        if m.role == "inclusion" and resolve(m.criterion) in compared:
            continue  # a definition the paper compares defines comparison groups, not the sample
        if m.role == "inclusion" and not long_covid_classifying:
            groups.setdefault(m.group, []).append(m)
        elif m.role == "subgroup" or (m.role == "inclusion" and long_covid_classifying):
            subgroup_mentions.append(m)
    if not groups and rules.subgroup_sets_badge and subgroup_mentions:
        for m in subgroup_mentions:
            groups.setdefault(m.group, []).append(m)
        subgroup_mentions = []

    modes = {c.group: c.mode for c in facts.combinations}
    criteria: list[str] = []
    group_values: list[bool | None] = []
    for group_id, members in groups.items():
        ids = list(dict.fromkeys(resolve(m.criterion) for m in members))
        criteria.extend(i for i in ids if i not in criteria)
        values = []
        for cid in ids:
            value = requires.get(cid)
            if value is True and rules.modified_definition == "unclear" and any(
                    m.modified for m in members if resolve(m.criterion) == cid):
                value = None
            values.append(value)
        mode = modes.get(group_id, "single") if len(ids) > 1 else "single"
        if mode == "any_of":
            group_values.append(_combine_any(values, rules.any_of))
        elif mode == "all_of":
            group_values.append(_combine_all(values, rules.all_of))
        else:
            group_values.append(values[0])
        quote_m = members[0]
        names = ", ".join(ids)
        label = f"inclusion ({mode.replace('_', ' ')}): {names}" if len(ids) > 1 else f"inclusion: {names}"
        evidence.add(label, quote_m.quote, quote_m.source)

    overall: bool | None
    if not group_values:
        overall = None
    elif any(v is True for v in group_values):
        overall = True  # conjunction: one PEM-requiring requirement binds every participant
    elif all(v is False for v in group_values):
        overall = False
    else:
        overall = None

    stated_required = [s for s in facts.pem if s.kind == "required"]
    stated_not_required = [s for s in facts.pem if s.kind == "not_required"]
    measured = [s for s in facts.pem if s.kind == "measured"]

    if stated_not_required:
        pem = rules.explicit_pem_not_required
        for s in stated_not_required:
            evidence.add("PEM stated as not required", s.quote, s.source)
    elif overall is True:
        pem = "required"
    elif stated_required:
        pem = rules.explicit_pem_requirement
        for s in stated_required:
            evidence.add("PEM required by the study's own inclusion rule", s.quote, s.source)
    elif overall is False:
        pem = "not_required"
    elif not groups:
        pem = rules.not_stated
    else:
        pem = "unclear"
    if rules.measured_pem_counts_as_required and measured and pem != "required":
        pem = "required"
    if pem == "required" and overall is True:
        for s in stated_required:
            evidence.add("PEM required by the study's own inclusion rule", s.quote, s.source)

    for m in subgroup_mentions:
        evidence.add(f"subgroup only (does not set the badge): {resolve(m.criterion)}", m.quote, m.source)
    for m in facts.mentions:
        if m.negated and m.role == "inclusion":
            evidence.add(f"negated (not an inclusion criterion): {resolve(m.criterion)}", m.quote, m.source)
        elif m.role == "comparison" and not m.negated:
            evidence.add(f"compared, not used for inclusion: {resolve(m.criterion)}", m.quote, m.source)
        elif m.role == "exclusion" and not m.negated:
            evidence.add(f"exclusion criterion, not inclusion: {resolve(m.criterion)}", m.quote, m.source)
        elif m.modified and m.role == "inclusion" and requires.get(resolve(m.criterion)):
            evidence.add(f"definition applied in modified form: {resolve(m.criterion)}", m.quote, m.source)
    if pem != "required":
        for s in measured[:2]:
            evidence.add("PEM measured, not an inclusion requirement", s.quote, s.source)
    if long_covid_classifying:
        c = facts.classifications[0]
        evidence.add("long COVID study: ME/CFS definition used to classify, not to enrol", c.quote, c.source)
    if cue is not None:
        evidence.add(f"design: {design}", cue.quote, cue.source)
    return Decision(criteria or [NOT_STATED], pem, design, level, evidence.items, population)


def decide_json(facts_json: dict[str, Any], policy: Policy) -> Decision:
    return decide(Facts.from_json(facts_json), policy)
