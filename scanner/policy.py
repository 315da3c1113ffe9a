"""Policy documents: YAML validated by pydantic, with errors that name field and line.

A policy decides what extracted facts mean (which definitions require PEM, how
combinations count, the badge wording). Its identity is ``version`` plus
``hash``: the sha256 of the file's bytes, so any edit, even to a comment, is a
new identity recorded on every decision made with it. Hashing bytes rather than
a canonical form keeps the hash checkable with ``sha256sum``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from atlas.errors import PolicyError

CATALOGUE_IDS: tuple[str, ...] = (
    "fukuda_1994", "oxford_1991", "ccc_2003", "icc_2011", "iom_2015", "nice_2007", "nice_2021",
    "holmes_1988", "london", "reeves_2005", "pediatric_2006", "ramsay", "other",
)
NOT_STATED = "not_stated"
PEM_VALUES: tuple[str, ...] = ("required", "not_required", "unclear", "not_applicable")
DESIGNS: tuple[str, ...] = (
    "rct", "cohort", "case_control", "cross_sectional", "review", "meta_analysis", "case_report",
    "protocol", "commentary", "case_definition", "other", "unknown",
)
DESIGN_BASES: tuple[str, ...] = ("publication_type", "title", "abstract", "methods", "mesh", "text_hint")
AMBIGUOUS_FAMILIES: tuple[str, ...] = ("cdc", "nice")

Pem = Literal["required", "not_required", "unclear", "not_applicable"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Criterion(_Strict):
    id: str
    name: str = Field(min_length=1)
    year: int | None = None
    aliases: list[str] = Field(default_factory=list)
    requires_pem: bool | None
    reason: str = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _known_id(cls, value: str) -> str:
        if value not in CATALOGUE_IDS:
            raise ValueError(f"unknown criterion id {value!r}; the catalogue ids are {', '.join(CATALOGUE_IDS)}")
        return value


class YearRule(_Strict):
    before: int | None = None
    from_: int | None = Field(default=None, alias="from")
    id: str

    @model_validator(mode="after")
    def _one_bound(self) -> "YearRule":
        if (self.before is None) == (self.from_ is None):
            raise ValueError("give exactly one of 'before' or 'from'")
        return self

    def matches(self, year: int) -> bool:
        return year < self.before if self.before is not None else year >= self.from_  # type: ignore[operator]


class Ambiguous(_Strict):
    default: str
    by_year: list[YearRule] = Field(default_factory=list)
    reason: str = Field(min_length=1)

    def resolve(self, year: int | None) -> str:
        if year is not None:
            for rule in self.by_year:
                if rule.matches(year):
                    return rule.id
        return self.default


class Rules(_Strict):
    any_of: Literal["every_alternative", "any_alternative"]
    all_of: Literal["any_member", "every_member"]
    subgroup_sets_badge: bool
    measured_pem_counts_as_required: bool
    explicit_pem_requirement: Pem
    explicit_pem_not_required: Pem
    modified_definition: Literal["unclear", "as_named"]
    long_covid_prevalence_is_subgroup: bool
    compared_definitions_set_badge: bool
    not_stated: Literal["unclear", "not_required"]
    not_applicable_designs: list[str]

    @field_validator("not_applicable_designs")
    @classmethod
    def _designs(cls, value: list[str]) -> list[str]:
        unknown = [d for d in value if d not in DESIGNS]
        if unknown:
            raise ValueError(f"unknown designs {unknown}; designs are {', '.join(DESIGNS)}")
        return value


class Badge(_Strict):
    label: str = Field(min_length=1)
    explainer: str = Field(min_length=1)


class Policy(_Strict):
    version: str = Field(min_length=1)
    title: str = ""
    criteria: list[Criterion]
    ambiguous: dict[str, Ambiguous]
    rules: Rules
    design_basis_priority: list[str]
    design_priority: list[str]
    evidence_levels: dict[str, str]
    badges: dict[str, Badge]
    # filled in by the loader, never read from the YAML
    hash: str = Field(default="", exclude=True)
    source: str = Field(default="", exclude=True)

    @field_validator("version", mode="before")
    @classmethod
    def _version_is_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("version must be a quoted string such as \"0.1\" (an unquoted 0.10 reads as 0.1)")
        return value

    @model_validator(mode="after")
    def _complete(self) -> "Policy":
        ids = [c.id for c in self.criteria]
        missing = [i for i in CATALOGUE_IDS if i not in ids]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if missing:
            raise ValueError(f"criteria: missing catalogue ids {missing}")
        if dupes:
            raise ValueError(f"criteria: ids listed twice {dupes}")
        for family, rule in self.ambiguous.items():
            if family not in AMBIGUOUS_FAMILIES:
                raise ValueError(f"ambiguous: unknown family {family!r}; families are {AMBIGUOUS_FAMILIES}")
            for target in [rule.default, *(r.id for r in rule.by_year)]:
                if target not in CATALOGUE_IDS:
                    raise ValueError(f"ambiguous.{family}: {target!r} is not a catalogue id")
        absent = [f for f in AMBIGUOUS_FAMILIES if f not in self.ambiguous]
        if absent:
            raise ValueError(f"ambiguous: missing families {absent}")
        if sorted(self.design_basis_priority) != sorted(DESIGN_BASES):
            raise ValueError(f"design_basis_priority must list each of {DESIGN_BASES} once")
        extra = [d for d in self.design_priority if d not in DESIGNS]
        if extra:
            raise ValueError(f"design_priority: unknown designs {extra}")
        lacking = [d for d in DESIGNS if d not in self.evidence_levels]
        if lacking:
            raise ValueError(f"evidence_levels: missing designs {lacking}")
        unknown = [d for d in self.evidence_levels if d not in DESIGNS]
        if unknown:
            raise ValueError(f"evidence_levels: unknown designs {unknown}")
        if sorted(self.badges) != sorted(PEM_VALUES):
            raise ValueError(f"badges: need exactly {PEM_VALUES}, got {sorted(self.badges)}")
        return self

    def criterion(self, criterion_id: str) -> Criterion:
        for c in self.criteria:
            if c.id == criterion_id:
                return c
        raise KeyError(criterion_id)

    @property
    def requires_pem(self) -> dict[str, bool | None]:
        return {c.id: c.requires_pem for c in self.criteria}


# --- loading with line numbers ---------------------------------------------------------------

def _construct(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> Any:
    """Plain Python from a composed YAML node, remembering each path's 1-based line."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            result[key] = _construct(value_node, path + (key,), lines)
            lines[path + (key,)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), lines) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _line_for(loc: tuple, lines: dict[tuple, int]) -> int | None:
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def parse_policy(data: bytes, *, source: str = "<policy>") -> Policy:
    """Validate policy bytes; a ``PolicyError`` names the field and the YAML line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PolicyError(f"{source}: not UTF-8 text ({error})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise PolicyError(f"{source}:{where} not valid YAML: {getattr(error, 'problem', error)}") from None
    if root is None or not isinstance(root, yaml.MappingNode):
        raise PolicyError(f"{source}: a policy is a YAML mapping with version, criteria, rules, ...")
    lines: dict[tuple, int] = {}
    raw = _construct(root, (), lines)
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            loc = tuple(item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            if not loc:  # a check across fields names its field first: "ambiguous.cdc: 'x' is not a catalogue id"
                named = re.match(r"([a-z_]+(?:\.[a-z_0-9]+)*)\b", message)
                loc = tuple(named.group(1).split(".")) if named else ()
                field = "(document)"
            else:
                field = ".".join(str(p) for p in loc)
            line = _line_for(loc, lines)
            problems.append(f"{source}: line {line}: {field}: {message}")
        raise PolicyError("\n".join(problems)) from None
    return policy.model_copy(update={"hash": hashlib.sha256(data).hexdigest(), "source": source})


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file (see ``resolve_policy_path`` for where relative paths look)."""
    resolved = resolve_policy_path(path)
    return parse_policy(resolved.read_bytes(), source=str(resolved))


def project_root() -> Path:
    """The checkout this package lives in (``policies/`` sits beside ``scanner/``)."""
    return Path(__file__).resolve().parent.parent


def default_policy_path() -> Path:
    return project_root() / "policies" / "v0.1.yaml"


def resolve_policy_path(path: str | Path | None) -> Path:
    """A policy path as given if it exists, else relative to the project root.

    So ``policies/v0.1.yaml`` works from any working directory, while an
    explicit path to a file elsewhere still wins.
    """
    if path is None:
        return default_policy_path()
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    if not candidate.is_absolute() and (project_root() / candidate).is_file():
        return project_root() / candidate
    raise PolicyError(f"{path}: no such policy file (looked in {Path.cwd()} and {project_root()})")


def policy_summary(policy: Policy) -> dict[str, Any]:
    """A plain dict of what a reader needs to see of a policy (for show and diff)."""
    return {
        "version": policy.version,
        "hash": policy.hash,
        "title": policy.title,
        "criteria": {c.id: {"name": c.name, "year": c.year, "requires_pem": c.requires_pem,
                            "aliases": list(c.aliases)} for c in policy.criteria},
        "ambiguous": {k: {"default": v.default,
                          "by_year": [r.model_dump(by_alias=True, exclude_none=True) for r in v.by_year]}
                      for k, v in policy.ambiguous.items()},
        "rules": policy.rules.model_dump(),
        "design_priority": list(policy.design_priority),
        "design_basis_priority": list(policy.design_basis_priority),
        "evidence_levels": dict(policy.evidence_levels),
        "badges": {k: v.model_dump() for k, v in policy.badges.items()},
    }


def diff_policies(a: Policy, b: Policy) -> list[tuple[str, Any, Any]]:
    """Every field whose value differs between two policies, as (path, a, b)."""
    changes: list[tuple[str, Any, Any]] = []

    def walk(prefix: str, x: Any, y: Any) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in list(x) + [k for k in y if k not in x]:
                walk(f"{prefix}.{key}" if prefix else str(key), x.get(key), y.get(key))
        elif x != y:
            changes.append((prefix, x, y))

    walk("", policy_summary(a), policy_summary(b))
    return changes
