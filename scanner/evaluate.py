"""Accuracy against labelled papers: per-criterion precision/recall/F1, PEM accuracy, confusion, quotes.

``evaluate`` is pure (labels and a policy in, a report out) so tests can hold
the figures above measured floors and regressions fail.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas.errors import InputError
from scanner.contract import classify_record
from scanner.extract import Extractor
from scanner.policy import CATALOGUE_IDS, NOT_STATED, PEM_VALUES, Policy

LABEL_FIELDS = ("id", "source", "title", "gold_criteria", "gold_pem", "gold_design", "reason")


@dataclass
class Report:
    n: int
    pem_accuracy: float
    design_accuracy: float
    criteria_exact: float
    unclear_rate: float
    quote_validity: float
    quotes: int
    per_criterion: dict[str, dict[str, float]]
    confusion: dict[str, dict[str, int]]
    errors: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"n": self.n, "pem_accuracy": round(self.pem_accuracy, 4),
                "design_accuracy": round(self.design_accuracy, 4), "criteria_exact": round(self.criteria_exact, 4),
                "unclear_rate": round(self.unclear_rate, 4), "quote_validity": round(self.quote_validity, 4),
                "quotes": self.quotes}


def load_labels(path: Path) -> list[dict[str, Any]]:
    labels = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                label = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path} line {number}: not valid JSON ({error.msg})") from None
            missing = [f for f in LABEL_FIELDS if f not in label]
            if missing:
                raise InputError(f"{path} line {number}: missing {missing}")
            if label["gold_pem"] not in PEM_VALUES:
                raise InputError(f"{path} line {number}: gold_pem {label['gold_pem']!r} is not one of {PEM_VALUES}")
            unknown = [c for c in label["gold_criteria"] if c not in (*CATALOGUE_IDS, NOT_STATED)]
            if unknown:
                raise InputError(f"{path} line {number}: unknown gold criteria {unknown}")
            labels.append(label)
    return labels


def evaluate(labels: list[dict[str, Any]], policy: Policy) -> Report:
    """Classify each labelled paper through the offline contract and compare with the gold labels."""
    extractor = Extractor()
    ids = [*CATALOGUE_IDS, NOT_STATED]
    tp = dict.fromkeys(ids, 0)
    fp = dict.fromkeys(ids, 0)
    fn = dict.fromkeys(ids, 0)
    confusion = {g: dict.fromkeys(PEM_VALUES, 0) for g in PEM_VALUES}
    pem_ok = design_ok = exact = unclear = quotes = valid = 0
    errors = []
    for label in labels:
        # exactly what the offline contract receives: no year, no publication types
        record = {"id": label["id"], "title": label["title"], "abstract": label.get("abstract"),
                  "methods": label.get("methods")}
        out = classify_record(record, policy, extractor, require_verbatim=False)  # quote validity is measured
        gold = set(label["gold_criteria"])
        got = set(out["criteria"])
        for c in ids:
            tp[c] += c in gold and c in got
            fp[c] += c not in gold and c in got
            fn[c] += c in gold and c not in got
        exact += gold == got
        confusion[label["gold_pem"]][out["pem"]] += 1
        pem_ok += label["gold_pem"] == out["pem"]
        design_ok += label["gold_design"] == out["design"]
        unclear += out["pem"] == "unclear"
        for item in out["evidence"]:
            quotes += 1
            valid += item["quote"] in (record.get(item["source"]) or "")
        if label["gold_pem"] != out["pem"] or gold != got or label["gold_design"] != out["design"]:
            errors.append({"id": label["id"], "gold": [sorted(gold), label["gold_pem"], label["gold_design"]],
                           "got": [sorted(got), out["pem"], out["design"]]})
    per = {}
    for c in ids:
        if tp[c] + fp[c] + fn[c] == 0:
            continue
        precision = tp[c] / (tp[c] + fp[c]) if tp[c] + fp[c] else 0.0
        recall = tp[c] / (tp[c] + fn[c]) if tp[c] + fn[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per[c] = {"precision": precision, "recall": recall, "f1": f1, "support": tp[c] + fn[c]}
    n = len(labels) or 1
    return Report(n=len(labels), pem_accuracy=pem_ok / n, design_accuracy=design_ok / n, criteria_exact=exact / n,
                  unclear_rate=unclear / n, quote_validity=(valid / quotes) if quotes else 1.0, quotes=quotes,
                  per_criterion=per, confusion=confusion, errors=errors)
