"""The offline contract: ``atlas scan classify --input IN.jsonl --output OUT.jsonl [--policy FILE]``.

Input, one JSON object a line: ``{"id": str, "pmid": str|null, "title": str,
"abstract": str|null, "methods": str|null}``. Optional extensions, used when
present: ``year`` (int, digits or null; resolves bare "CDC"/"NICE" names, see the policy's
``ambiguous`` section, which otherwise falls back to its default),
``publication_types`` and ``mesh_terms`` (lists of strings). Other keys are ignored.

Output, one line per input line in the same order: ``{"id", "criteria",
"pem", "design", "evidence": [{"label", "quote", "source"}]}`` where every
quote is a verbatim substring of the named source (title, abstract or methods).

The file is UTF-8 (a byte-order mark is allowed). A bad line (not UTF-8, not
JSON, a missing or mistyped field) stops the run with an ``InputError`` naming its line number, and no
output file is written: results go to a temporary file in the output's folder,
renamed into place only when every line succeeded.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from atlas.errors import InputError
from scanner.decide import decide
from scanner.extract import Extractor
from scanner.facts import TEXT_SOURCES, PaperText
from scanner.policy import Policy

_REQUIRED_TEXT = ("id", "title")
_OPTIONAL_TEXT = ("pmid", "abstract", "methods")


def parse_line(line: str, number: int) -> dict[str, Any]:
    """One validated input record; ``InputError`` names the line and the problem."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"line {number}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict):
        raise InputError(f"line {number}: expected a JSON object, got {type(record).__name__}")
    for key in _REQUIRED_TEXT:
        if key not in record:
            raise InputError(f"line {number}: missing required field {key!r}")
        if not isinstance(record[key], str):
            raise InputError(f"line {number}: field {key!r} must be a string")
    if not record["id"].strip():
        raise InputError(f"line {number}: field 'id' is empty")
    for key in _OPTIONAL_TEXT:
        if record.get(key) is not None and not isinstance(record[key], str):
            raise InputError(f"line {number}: field {key!r} must be a string or null")
    year = record.get("year")
    if isinstance(year, str) and year.strip().isdigit():
        record["year"] = year = int(year)  # "2020" from a CSV-born file means the year 2020
    if year is not None and (not isinstance(year, int) or isinstance(year, bool)):
        raise InputError(f"line {number}: field 'year' must be an integer (or digits) or null")
    for key in ("publication_types", "mesh_terms"):
        value = record.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise InputError(f"line {number}: field {key!r} must be a list of strings or null")
    return record


def classify_record(record: dict[str, Any], policy: Policy, extractor: Extractor, *,
                    require_verbatim: bool = True) -> dict[str, Any]:
    """One output line. A quote that is not its source's substring is an internal error here, unless
    ``require_verbatim`` is false (evaluation counts such quotes instead)."""
    text = PaperText.from_fields(title=record["title"], abstract=record.get("abstract"),
                                 methods=record.get("methods"), publication_types=record.get("publication_types"),
                                 mesh_terms=record.get("mesh_terms"), year=record.get("year"))
    decision = decide(extractor.extract(text), policy)
    evidence = []
    for item in decision.evidence:
        if item["source"] not in TEXT_SOURCES:
            continue  # metadata cues (publication types, MeSH) are not part of the contract's sources
        if require_verbatim and item["quote"] not in text.source(item["source"]):
            raise RuntimeError(f"internal error: evidence quote not found in {item['source']} of {record['id']}")
        evidence.append(item)
    return {"id": record["id"], "criteria": decision.criteria, "pem": decision.pem, "design": decision.design,
            "evidence": evidence}


def iter_input(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise InputError(f"line {number}: not UTF-8 (byte {raw[error.start]:#04x} at column {error.start + 1})"
                                 ) from None
            if not line.strip():
                raise InputError(f"line {number}: empty line (every line must be one JSON object)")
            yield number, parse_line(line, number)


def classify_file(input_path: Path, output_path: Path, policy: Policy) -> int:
    """Classify every line of ``input_path`` into ``output_path``; all lines or no file."""
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise InputError(f"{input_path}: no such input file")
    extractor = Extractor()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{output_path.name}.", suffix=".tmp", dir=output_path.parent)
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for _number, record in iter_input(input_path):
                out.write(json.dumps(classify_record(record, policy, extractor), ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp_name, output_path)
    except InputError as error:
        Path(tmp_name).unlink(missing_ok=True)
        raise InputError(f"{input_path}: {error}") from None
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return count
