"""Facts: what a paper's text says, recorded without any policy.

Every fact carries the verbatim ``quote``, the ``source`` it came from and the
character offsets ``start``/``end`` into that source, so ``text[start:end] ==
quote`` always holds and a decision can cite its evidence without re-reading the
paper. Sources are ``title``, ``abstract``, ``methods`` (open-access full text),
and ``publication_types`` / ``mesh_terms``: those two lists joined with
``"; "`` (see ``joined_list``), so offsets point into one string as well.

Facts are plain dataclasses serialised to compact JSON: re-deciding 100,000
stored papers under a new policy must stay a matter of seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

TEXT_SOURCES: tuple[str, ...] = ("title", "abstract", "methods")
LIST_SOURCES: tuple[str, ...] = ("publication_types", "mesh_terms")
ROLES: tuple[str, ...] = ("inclusion", "exclusion", "comparison", "subgroup", "background")
MODES: tuple[str, ...] = ("single", "any_of", "all_of")
PEM_KINDS: tuple[str, ...] = ("required", "not_required", "measured")
POPULATIONS: tuple[str, ...] = ("adult", "paediatric", "long_covid")
# Names the text cannot tie to one definition by itself; the policy resolves them by year.
FAMILIES: tuple[str, ...] = ("cdc", "nice")

LIST_SEPARATOR = "; "


def joined_list(items: list[str] | tuple[str, ...] | None) -> str:
    """The one string that list sources (publication types, MeSH) are quoted from."""
    return LIST_SEPARATOR.join(items or ())


@dataclass(slots=True)
class Mention:
    """A case definition named in the text, the role it plays, and how it combines."""

    criterion: str  # a catalogue id, or a family in FAMILIES
    text: str  # the name as matched, e.g. "Canadian Consensus Criteria (CCC)"
    role: str
    group: int  # mentions joined by and/or/both in one phrase share a group
    negated: bool
    modified: bool  # named as modified/adapted/loosely applied
    source: str
    start: int
    end: int
    quote: str  # the sentence (or a window of it) holding the name
    match_start: int
    match_end: int


@dataclass(slots=True)
class Combination:
    """How the definitions of one group combine: ``single``, ``any_of`` or ``all_of``."""

    group: int
    mode: str
    criteria: list[str]
    role: str
    source: str
    start: int
    end: int
    quote: str


@dataclass(slots=True)
class PemStatement:
    """An explicit statement that PEM was required, was not required, or was only measured."""

    kind: str
    source: str
    start: int
    end: int
    quote: str


@dataclass(slots=True)
class DesignCue:
    """A sign of study design and where it came from (publication type, title, text, MeSH)."""

    design: str
    basis: str
    source: str
    start: int
    end: int
    quote: str


@dataclass(slots=True)
class PopulationCue:
    value: str
    source: str
    start: int
    end: int
    quote: str


@dataclass(slots=True)
class Classification:
    """A statement that some share of the sample met a definition (a prevalence, not enrolment)."""

    source: str
    start: int
    end: int
    quote: str


@dataclass(slots=True)
class Facts:
    """Everything one extraction found in one paper."""

    scanner_version: str
    extractor: str = "rules"
    year: int | None = None
    mentions: list[Mention] = field(default_factory=list)
    combinations: list[Combination] = field(default_factory=list)
    pem: list[PemStatement] = field(default_factory=list)
    designs: list[DesignCue] = field(default_factory=list)
    population: list[PopulationCue] = field(default_factory=list)
    classifications: list[Classification] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # LLM facts whose quote failed the check

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Facts":
        return cls(
            scanner_version=data["scanner_version"],
            extractor=data.get("extractor", "rules"),
            year=data.get("year"),
            mentions=[Mention(**m) for m in data.get("mentions", ())],
            combinations=[Combination(**c) for c in data.get("combinations", ())],
            pem=[PemStatement(**p) for p in data.get("pem", ())],
            designs=[DesignCue(**d) for d in data.get("designs", ())],
            population=[PopulationCue(**p) for p in data.get("population", ())],
            classifications=[Classification(**c) for c in data.get("classifications", ())],
            rejected=list(data.get("rejected", ())),
        )

    def all_quoted(self) -> list[Any]:
        """Every fact that carries a quote (for checks that quotes are verbatim)."""
        return [*self.mentions, *self.combinations, *self.pem, *self.designs, *self.population,
                *self.classifications]


@dataclass(slots=True)
class PaperText:
    """The text one extraction reads. Offsets in facts point into these strings."""

    title: str = ""
    abstract: str = ""
    methods: str = ""
    publication_types: str = ""
    mesh_terms: str = ""
    year: int | None = None

    def source(self, name: str) -> str:
        return getattr(self, name)

    @classmethod
    def from_fields(cls, *, title: str | None, abstract: str | None = None, methods: str | None = None,
                    publication_types: list[str] | None = None, mesh_terms: list[str] | None = None,
                    year: int | None = None) -> "PaperText":
        return cls(title=title or "", abstract=abstract or "", methods=methods or "",
                   publication_types=joined_list(publication_types), mesh_terms=joined_list(mesh_terms),
                   year=year)
