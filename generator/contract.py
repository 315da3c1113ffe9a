"""The offline contract: ``atlas generate --input IN.jsonl --output OUT.jsonl``.

Input lines are the scanner's contract: ``{"id": str, "pmid": str|null,
"title": str, "abstract": str|null, "methods": str|null}``. Each gives one
output line, in the same order::

    {"id", "backend", "model", "generator_version", "status", "fields": {...},
     "checks": [{"name", "passed", "detail"}]}

Every input line is validated before anything is generated; a bad line stops
the run with an ``InputError`` naming its line number, and no output file is
written (the output appears by rename only when every line is done). Blank
lines are skipped.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from atlas.config import Settings
from atlas.errors import InputError
from generator.version import GENERATOR_VERSION
from generator.pipeline import ExtractiveBackend, LLMBackend, SummaryOutcome, make_backend
from generator.schema import PaperInput, normalise_labels

Labeler = Callable[[dict[str, Any]], dict[str, Any] | None]

REQUIRED_KEYS = ("id", "title")
NULLABLE_TEXT = ("pmid", "abstract", "methods")
ALLOWED_KEYS = frozenset(REQUIRED_KEYS + NULLABLE_TEXT)


def parse_line(text: str, number: int) -> dict[str, Any]:
    """One input line, checked against the contract; the error names the line."""
    try:
        item = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"line {number}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(item, dict):
        raise InputError(f"line {number}: expected a JSON object, got {type(item).__name__}")
    unknown = sorted(set(item) - ALLOWED_KEYS)
    if unknown:
        raise InputError(f"line {number}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(ALLOWED_KEYS))}")
    for key in REQUIRED_KEYS:
        if key not in item:
            raise InputError(f"line {number}: missing required key {key!r}")
        if not isinstance(item[key], str):
            raise InputError(f"line {number}: {key!r} must be a string, got {type(item[key]).__name__}")
    if not item["id"].strip():
        raise InputError(f"line {number}: 'id' must not be empty")
    for key in NULLABLE_TEXT:
        value = item.get(key)
        if value is not None and not isinstance(value, str):
            raise InputError(f"line {number}: {key!r} must be a string or null, got {type(value).__name__}")
    return item


def read_input(path: Path) -> list[dict[str, Any]]:
    """Every line of the input file, validated, with ids unique."""
    try:
        handle = Path(path).open("rb")
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from None
    items: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"line {number}: not UTF-8 text") from None
            if not line.strip():
                continue
            item = parse_line(line, number)
            if item["id"] in seen:
                raise InputError(f"line {number}: id {item['id']!r} repeats line {seen[item['id']]}")
            seen[item["id"]] = number
            items.append(item)
    return items


def output_line(item_id: str, outcome: SummaryOutcome) -> dict[str, Any]:
    return {
        "id": item_id,
        "backend": outcome.backend,
        "model": outcome.model,
        "generator_version": outcome.generator_version,
        "status": outcome.status,
        "fields": outcome.fields or {},
        "checks": outcome.checks,
    }


def run_contract(input_path: Path, output_path: Path, settings: Settings, *, labeler: Labeler | None = None,
                 llm_options: dict[str, Any] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Summarise every input line and write the output file atomically; returns status counts.

    ``progress(done, total)`` is called as papers finish.
    """
    items = read_input(input_path)
    papers = []
    for item in items:
        labels = labeler(item) if labeler else None
        papers.append(PaperInput(title=item["title"], abstract=item.get("abstract"), methods=item.get("methods"),
                                 labels=normalise_labels(labels), pmid=item.get("pmid")))
    backend = make_backend(settings, llm_options=llm_options)
    offline = backend if isinstance(backend, ExtractiveBackend) else ExtractiveBackend()

    finished = [0]
    lock = threading.Lock()

    def one(paper: PaperInput) -> SummaryOutcome:
        chosen = backend if paper.has_body else offline
        outcome = chosen.generate(paper, chosen.input_hash(paper))
        if progress is not None:
            with lock:
                finished[0] += 1
                progress(finished[0], len(papers))
        return outcome

    try:
        if isinstance(backend, LLMBackend):
            with ThreadPoolExecutor(max_workers=settings.llm_concurrency, thread_name_prefix="contract") as pool:
                outcomes = list(pool.map(one, papers))
        else:
            outcomes = [one(paper) for paper in papers]
    finally:
        client = getattr(backend, "client", None)
        if client is not None:
            client.close()
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_path.with_name(f".{output_path.name}.{os.getpid()}.tmp")
    counts: dict[str, int] = {"lines": len(items)}
    try:
        with tmp.open("w", encoding="utf-8") as out:
            for item, outcome in zip(items, outcomes):
                out.write(json.dumps(output_line(item["id"], outcome), ensure_ascii=False) + "\n")
                counts[outcome.status] = counts.get(outcome.status, 0) + 1
        os.replace(tmp, output_path)
    finally:
        tmp.unlink(missing_ok=True)
    counts["generator_version"] = GENERATOR_VERSION  # type: ignore[assignment]
    return counts
