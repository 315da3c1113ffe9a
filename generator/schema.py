"""What a summary contains, and what the generator reads about a paper.

``SummaryFields`` is the output contract of every backend; its strict JSON
schema is what an LLM endpoint is asked to follow. Stored summaries add one
field the backend does not write: ``notice``, the line the pages show to say
how the text was made.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from generator.json_schema import strict_schema

SUMMARY_SCHEMA_NAME = "plain_language_summary"

EXTRACTIVE_NOTICE = (
    "Extractive summary: built by a program from sentences of the abstract, not written by a language model. "
    "Quoted findings are the authors' own words."
)


def llm_notice(model: str) -> str:
    return (
        f"Written by a language model ({model}) from the paper's title, abstract and, when available, methods; "
        "then checked automatically for numbers, claims, advice and reading level. Read the abstract for the full picture."
    )


class SummaryFields(BaseModel):
    """A plain-language account of one paper, for patients and carers."""

    model_config = ConfigDict(extra="forbid", strict=True)

    plain_summary: str = Field(description="What the study did and found, in plain words (reading grade 10 or lower).")
    why_it_matters: str = Field(description="Why this matters to people with ME/CFS, without overstating it.")
    key_findings: list[str] = Field(description="The main results, one per item, with numbers only as the paper gives them.")
    limitations: list[str] = Field(description="What limits how far the results can be trusted or applied.")
    does_not_prove: str = Field(description="What this study cannot show, given its design and size.")
    open_questions: list[str] = Field(description="Questions the study leaves open.")


@lru_cache(maxsize=1)
def _summary_schema_json() -> str:
    return json.dumps(strict_schema(SummaryFields), sort_keys=True)


def summary_json_schema() -> dict[str, Any]:
    """The strict JSON schema an LLM endpoint is asked to follow (a fresh copy each call)."""
    return json.loads(_summary_schema_json())


def summary_schema_hash() -> str:
    return hashlib.sha256(_summary_schema_json().encode()).hexdigest()


LABEL_KEYS = ("design", "pem", "evidence_level", "criteria")


def normalise_labels(labels: dict[str, Any] | None) -> dict[str, Any] | None:
    """Scanner labels reduced to the keys the generator uses, in a stable form (criteria sorted)."""
    if not labels:
        return None
    out: dict[str, Any] = {}
    for key in LABEL_KEYS:
        value = labels.get(key)
        if key == "criteria":
            value = sorted(str(v) for v in value) if value else []
        elif value is not None:
            value = str(value)
        out[key] = value
    if not any(out.values()):
        return None
    return out


@dataclass(frozen=True, slots=True)
class PaperInput:
    """The text of one paper and its scanner labels: everything a summary may depend on."""

    title: str
    abstract: str | None = None
    methods: str | None = None
    labels: dict[str, Any] | None = None
    pmid: str | None = None
    content_hash: str | None = None
    sections: tuple[tuple[str | None, str], ...] = field(default_factory=tuple)

    @property
    def has_body(self) -> bool:
        return bool((self.abstract or "").strip() or (self.methods or "").strip())


def stored_fields(fields: SummaryFields, notice: str) -> dict[str, Any]:
    """The fields as stored and shown: the backend's output plus the notice line."""
    return {**fields.model_dump(), "notice": notice}
