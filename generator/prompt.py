"""Versioned prompt files and how a paper is put into them.

A prompt file (``prompts/<name>_v<N>.md``) has a ``=== system ===`` part and a
``=== user ===`` part. ``{{name}}`` placeholders are filled in one pass, so text
from a paper is never itself searched for placeholders. Paper text is placed
between ``<paper_data>`` markers; a marker inside the paper's own text is
defused so the paper cannot close the data block early.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from generator.schema import PaperInput

PROMPT_DIR = Path(__file__).resolve().parent / "prompts"
SUMMARY_PROMPT = "summary_v1.md"

_PART = re.compile(r"^=== (system|user) ===\s*$", re.MULTILINE)
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_MARKER = re.compile(r"<\s*/?\s*paper_data\s*>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Prompt:
    name: str
    system: str
    user: str
    sha256: str

    def render(self, values: dict[str, str]) -> list[dict[str, str]]:
        """Chat messages with the placeholders filled; an unknown placeholder is an error, not a blank."""

        def fill(template: str) -> str:
            def replace(match: re.Match[str]) -> str:
                key = match.group(1)
                if key not in values:
                    raise KeyError(f"prompt {self.name} needs a value for {{{{{key}}}}}")
                return values[key]

            return _PLACEHOLDER.sub(replace, template)

        return [{"role": "system", "content": fill(self.system)}, {"role": "user", "content": fill(self.user)}]


def parse_prompt(name: str, text: str) -> Prompt:
    pieces = _PART.split(text)
    parts: dict[str, str] = {}
    for index in range(1, len(pieces) - 1, 2):
        parts[pieces[index]] = pieces[index + 1].strip()
    if set(parts) != {"system", "user"}:
        raise ValueError(f"prompt {name} must have exactly one '=== system ===' and one '=== user ===' part")
    return Prompt(name, parts["system"], parts["user"], hashlib.sha256(text.encode("utf-8")).hexdigest())


def load_prompt(name: str = SUMMARY_PROMPT) -> Prompt:
    """Read a bundled prompt file."""
    text = (PROMPT_DIR / name).read_text("utf-8")
    return parse_prompt(name, text)


def defuse(text: str | None) -> str:
    """Paper text made safe to place inside the data markers."""
    if not text:
        return ""
    return _MARKER.sub(lambda m: m.group(0).replace("<", "‹").replace(">", "›"), text)


def summary_values(paper: PaperInput) -> dict[str, str]:
    labels = paper.labels or {}
    criteria = labels.get("criteria") or []
    return {
        "design": str(labels.get("design") or "unknown"),
        "evidence_level": str(labels.get("evidence_level") or "unknown"),
        "pem": str(labels.get("pem") or "unknown"),
        "criteria": ", ".join(criteria) if criteria else "unknown",
        "title": defuse(paper.title) or "(no title)",
        "abstract": defuse(paper.abstract) or "(no abstract)",
        "methods": defuse(paper.methods) or "(not available)",
    }
