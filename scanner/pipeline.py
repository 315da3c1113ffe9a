"""Scanning stored papers: extract what is new, decide what is undecided, re-decide on a policy change.

``scan_pending`` is what the nightly flow calls; ``reclassify_all`` is what a
policy change calls. Both skip work already done: an extraction exists per
(pmid, content hash, scanner version), a decision per (extraction, policy hash).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from atlas.config import Settings
from atlas.store import Store
from atlas.store.policies import record_policy
from atlas.store.scans import (
    CLASSIFICATION_SCHEMA,
    all_current_extractions,
    current_labels,
    insert_classifications,
    insert_extractions,
    pending_papers,
    record_failures,
    stored_methods,
    undecided_extractions,
)
from scanner.decide import Decision, decide
from scanner.extract import SCANNER_VERSION, Extractor
from scanner.facts import TEXT_SOURCES, Facts, PaperText
from scanner.policy import Policy

Progress = Callable[[str, int, int], None]


def paper_text(paper: dict[str, Any], methods: str | None = None) -> PaperText:
    return PaperText.from_fields(title=paper.get("title"), abstract=paper.get("abstract"), methods=methods,
                                 publication_types=list(paper.get("publication_types") or ()),
                                 mesh_terms=list(paper.get("mesh_terms") or ()), year=paper.get("year"))


def text_hash(text: PaperText) -> str:
    parts = (text.title, text.abstract, text.methods, text.publication_types, text.mesh_terms, str(text.year))
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


def extraction_row(pmid: str, content_hash: str, text: PaperText, facts: Facts) -> dict[str, Any]:
    digest = text_hash(text)
    key = "|".join((pmid, content_hash, facts.scanner_version, facts.extractor, digest))
    return {
        "extraction_id": hashlib.sha256(key.encode("utf-8")).hexdigest()[:32],
        "pmid": pmid, "content_hash": content_hash, "scanner_version": facts.scanner_version,
        "extractor": facts.extractor, "text_hash": digest,
        "sources": [s for s in TEXT_SOURCES if text.source(s)],
        "facts": json.dumps(facts.to_json(), ensure_ascii=False, separators=(",", ":")),
    }


class _Columns:
    """Classification rows gathered column by column (cheaper than a dict per row at 100k rows)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.data: dict[str, list] = {name: [] for name in CLASSIFICATION_SCHEMA.names}

    def add(self, pmid: str, extraction_id: str, scanner_version: str, decision: Decision) -> None:
        d = self.data
        d["pmid"].append(pmid)
        d["extraction_id"].append(extraction_id)
        d["scanner_version"].append(scanner_version)
        d["policy_version"].append(self.policy.version)
        d["policy_hash"].append(self.policy.hash)
        d["criteria"].append(decision.criteria)
        d["pem"].append(decision.pem)
        d["design"].append(decision.design)
        d["evidence_level"].append(decision.evidence_level)
        d["population"].append(decision.population)
        d["evidence"].append(decision.evidence)

    def __len__(self) -> int:
        return len(self.data["pmid"])


def scan_pending(store: Store, settings: Settings, policy: Policy, *, run_id: str | None, client: Any = None,
                 progress: Progress | None = None, llm: Any = None, batch_size: int = 1000) -> dict[str, int]:
    """Extract every current paper lacking an extraction for this scanner version, then decide the undecided.

    ``client`` (an ``EutilsClient``) enables full-text fetching when ``settings.fetch_fulltext``;
    ``llm`` (an ``LLMClient``) is used when ``settings.llm_extractor`` (built from settings if not given).
    Failures of one paper become ``paper_failures`` rows (stage ``fulltext`` or ``scan``).
    """
    counts = {"pending": 0, "extracted": 0, "failed": 0, "fulltext_fetched": 0, "fulltext_with_methods": 0,
              "fulltext_failed": 0, "fulltext_not_open_access": 0, "llm_rejected_facts": 0,
              "decided": 0}
    extractor = Extractor()
    reader: Any = extractor
    calls: list[dict[str, Any]] = []  # LLM call records of a client built here, written per batch
    if settings.llm_extractor:
        from scanner.llm_extract import LLMExtractor

        if llm is None:
            from generator.llm import LLMClient

            llm = LLMClient(settings, call_log=calls.append)
        reader = LLMExtractor(llm, rules=extractor)
    papers = pending_papers(store, SCANNER_VERSION)
    counts["pending"] = len(papers)
    for offset in range(0, len(papers), batch_size):
        batch = papers[offset:offset + batch_size]
        if settings.fetch_fulltext and client is not None:
            from scanner.fulltext import fetch_fulltexts

            for key, value in fetch_fulltexts(store, client, batch, run_id=run_id).items():
                counts[key] += value
        methods = stored_methods(store, [p["pmid"] for p in batch])
        rows, failures, rejected = _extract_batch(batch, methods, reader)
        counts["extracted"] += insert_extractions(store, rows, run_id=run_id)
        counts["failed"] += record_failures(store, failures, run_id=run_id)
        counts["llm_rejected_facts"] += rejected
        if calls:
            from atlas.store.summaries import write_llm_calls

            write_llm_calls(store, list(calls), run_id=run_id)
            counts["llm_calls"] = counts.get("llm_calls", 0) + len(calls)
            calls.clear()
        if progress:
            progress("extract", min(offset + batch_size, len(papers)), len(papers))
    counts["decided"] = decide_pending(store, policy, run_id=run_id, progress=progress)
    return counts


def _extract_batch(batch: Sequence[dict[str, Any]], methods: dict[str, str], reader: Any
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    rows, failures, rejected = [], [], 0
    for paper in batch:
        text = paper_text(paper, methods.get(paper["pmid"]))
        try:
            facts = reader.extract(text, pmid=paper["pmid"])
        except Exception as error:  # one paper never stops the run; the next run tries it again
            failures.append({"pmid": paper["pmid"], "stage": "scan", "error": f"{type(error).__name__}: {error}"[:2000]})
            continue
        rejected += len(facts.rejected)
        rows.append(extraction_row(paper["pmid"], paper["content_hash"], text, facts))
    return rows, failures, rejected


def decide_pending(store: Store, policy: Policy, *, run_id: str | None, progress: Progress | None = None,
                   batch_size: int = 5000) -> int:
    """Decide every current extraction that has no decision under this policy's hash yet."""
    remember_policy(store, policy)
    decided = 0
    for rows in undecided_extractions(store, policy.hash, batch_size=batch_size):
        columns = _Columns(policy)
        for extraction_id, pmid, version, facts_json in rows:
            columns.add(pmid, extraction_id, version, decide(Facts.from_json(json.loads(facts_json)), policy))
        decided += insert_classifications(store, columns.data, run_id=run_id)
        if progress:
            progress("decide", decided, decided)
    return decided


def remember_policy(store: Store, policy: Policy) -> bool:
    """Keep the policy's badge wording and names beside its decisions (once per policy hash)."""
    return record_policy(
        store, policy_hash=policy.hash, version=policy.version,
        badges={pem: badge.model_dump() for pem, badge in policy.badges.items()},
        criteria_names={c.id: c.name for c in policy.criteria},
        document=policy.model_dump(mode="json"),
    )


def reclassify_all(store: Store, policy: Policy, *, run_id: str | None) -> dict[str, Any]:
    """Re-decide every current extraction under ``policy`` from stored facts: no text, no LLM.

    Always appends, even when the policy was applied before, so the policy
    reclassified last is the one ``current_classifications`` shows.
    """
    began = time.perf_counter()
    remember_policy(store, policy)
    table = all_current_extractions(store)
    previous = current_labels(store)
    loaded = time.perf_counter()
    columns = _Columns(policy)
    changed_pem = changed_criteria = 0
    ids = table.column("extraction_id").to_pylist()
    pmids = table.column("pmid").to_pylist()
    versions = table.column("scanner_version").to_pylist()
    loads = json.loads
    for extraction_id, pmid, version, facts_json in zip(ids, pmids, versions, table.column("facts").to_pylist()):
        decision = decide(Facts.from_json(loads(facts_json)), policy)
        columns.add(pmid, extraction_id, version, decision)
        before = previous.get(pmid)
        if before is not None:
            changed_pem += before[0] != decision.pem
            changed_criteria += before[1] != tuple(decision.criteria)
    decided_at = time.perf_counter()
    written = insert_classifications(store, columns.data, run_id=run_id)
    done = time.perf_counter()
    pem_counts: dict[str, int] = {}
    for value in columns.data["pem"]:
        pem_counts[value] = pem_counts.get(value, 0) + 1
    return {
        "extractions": table.num_rows, "decided": written, "changed_pem": changed_pem,
        "changed_criteria": changed_criteria, "previously_classified": len(previous), "pem": pem_counts,
        "policy_version": policy.version, "policy_hash": policy.hash, "llm_calls": 0,
        "seconds_load": round(loaded - began, 3), "seconds_decide": round(decided_at - loaded, 3),
        "seconds_write": round(done - decided_at, 3),
    }
