"""Summaries for the papers that lack one: choose, generate, check, store.

A paper needs a new summary when no usable row exists for its (input hash,
generator version, model). The input hash covers everything the output may
depend on: title, abstract, methods, scanner labels, the prompt file, the
output schema and the request settings. An unchanged re-run therefore makes no
calls, and a prompt or label change regenerates exactly the papers it affects.

LLM calls run on a bounded thread pool; results are written by the calling
thread in batches (one transaction each), so a run that dies loses at most one
batch and the next run carries on from there. A budget cap stops submitting
new calls once the spend plus the estimates of calls in flight would pass it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from atlas.config import Settings, settings_for_database
from atlas.errors import BadRequest, ConfigError, ServiceError
from atlas.store import Store
from atlas.store import summaries as summary_store
from atlas.store.runs import finish_run, start_run
from generator import checks, extractive
from generator.version import GENERATOR_VERSION
from generator.checks import CHECKS_VERSION
from generator.prompt import Prompt, load_prompt, summary_values
from generator.schema import (
    EXTRACTIVE_NOTICE,
    SUMMARY_SCHEMA_NAME,
    PaperInput,
    SummaryFields,
    llm_notice,
    normalise_labels,
    stored_fields,
    summary_json_schema,
    summary_schema_hash,
)

LLM_BACKEND = "openai-compatible"
EXPECTED_OUTPUT_TOKENS = 700
MAX_LISTED_FAILURES = 20

Progress = Callable[[int, int], None]


@dataclass(slots=True)
class SummaryOutcome:
    """One generated summary (or the record of why there is none), ready to store."""

    pmid: str | None
    content_hash: str | None
    input_hash: str
    prompt_hash: str
    backend: str
    model: str
    status: str
    fields: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    error: str | None = None
    labels: dict[str, Any] | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = 0
    raw_response: str | None = None
    generator_version: str = GENERATOR_VERSION
    checks_version: str = CHECKS_VERSION

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


class Backend(Protocol):
    """What the pipeline needs from a summary backend."""

    name: str
    model: str
    prompt_hash: str

    def input_hash(self, paper: PaperInput) -> str: ...

    def generate(self, paper: PaperInput, input_hash: str) -> SummaryOutcome: ...


def input_hash(paper: PaperInput, *, prompt_hash: str, settings_used: dict[str, Any]) -> str:
    """sha256 over everything a summary may depend on (and nothing else)."""
    payload = {
        "title": paper.title or "",
        "abstract": paper.abstract or "",
        "methods": paper.methods or "",
        "labels": normalise_labels(paper.labels),
        "prompt": prompt_hash,
        "schema": summary_schema_hash(),
        "settings": settings_used,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _finish(outcome: SummaryOutcome, fields: SummaryFields, paper: PaperInput, notice: str,
            policy: checks.CheckPolicy, facts: checks.SourceFacts | None = None) -> SummaryOutcome:
    facts = facts or checks.source_facts(paper.title, paper.abstract, paper.methods, paper.labels)
    results = checks.run_checks(fields.model_dump(), facts, policy=policy)
    outcome.status, outcome.reasons = checks.verdict(results)
    outcome.checks = [r.as_dict() for r in results]
    outcome.fields = stored_fields(fields, notice)
    return outcome


class ExtractiveBackend:
    """The offline default: no endpoint, no cost, same fields and checks."""

    name = extractive.EXTRACTIVE_BACKEND
    model = extractive.EXTRACTIVE_MODEL
    prompt_hash = hashlib.sha256(f"extractive:{extractive.EXTRACTIVE_MODEL}".encode()).hexdigest()

    def __init__(self, policy: checks.CheckPolicy | None = None):
        self.policy = policy or checks.CheckPolicy()
        self.settings_used: dict[str, Any] = {}

    def input_hash(self, paper: PaperInput) -> str:
        return input_hash(paper, prompt_hash=self.prompt_hash, settings_used=self.settings_used)

    def generate(self, paper: PaperInput, input_hash: str) -> SummaryOutcome:
        outcome = SummaryOutcome(pmid=paper.pmid, content_hash=paper.content_hash, input_hash=input_hash,
                                 prompt_hash=self.prompt_hash, backend=self.name, model=self.model,
                                 status="ok", labels=normalise_labels(paper.labels))
        facts = checks.source_facts(paper.title, paper.abstract, paper.methods, paper.labels)
        fields = extractive.summarise(paper, self.policy, facts)
        return _finish(outcome, fields, paper, EXTRACTIVE_NOTICE, self.policy, facts)


class LLMBackend:
    """Summaries from an OpenAI-compatible endpoint through ``generator.llm``."""

    name = LLM_BACKEND

    def __init__(self, client: Any, prompt: Prompt | None = None, policy: checks.CheckPolicy | None = None):
        self.client = client
        self.prompt = prompt or load_prompt()
        self.model = client.model
        self.prompt_hash = self.prompt.sha256
        self.policy = policy or checks.CheckPolicy()
        self.settings_used = {"temperature": client.temperature}

    def input_hash(self, paper: PaperInput) -> str:
        return input_hash(paper, prompt_hash=self.prompt_hash, settings_used=self.settings_used)

    def messages(self, paper: PaperInput) -> list[dict[str, str]]:
        return self.prompt.render(summary_values(paper))

    def generate(self, paper: PaperInput, input_hash: str) -> SummaryOutcome:
        from generator.llm import LLMSchemaError, LLMUnavailable

        outcome = SummaryOutcome(pmid=paper.pmid, content_hash=paper.content_hash, input_hash=input_hash,
                                 prompt_hash=self.prompt_hash, backend=self.name, model=self.model,
                                 status="failed", labels=normalise_labels(paper.labels))
        try:
            result = self.client.complete_json(purpose="summary", messages=self.messages(paper),
                                               schema_name=SUMMARY_SCHEMA_NAME, schema=summary_json_schema(),
                                               pmid=paper.pmid)
        except LLMSchemaError as error:
            outcome.status = "invalid"
            outcome.error = str(error)
            outcome.reasons = [f"schema: {error}"]
            outcome.checks = [{"name": "schema", "passed": False, "detail": str(error)}]
            outcome.raw_response = error.raw
            outcome.input_tokens, outcome.output_tokens = error.input_tokens, error.output_tokens
            outcome.cost_usd, outcome.latency_s, outcome.attempts = error.cost_usd, error.latency_s, error.attempts
            return outcome
        except (ServiceError, BadRequest) as error:
            outcome.error = str(error)
            outcome.reasons = [f"call: {error}"]
            outcome.checks = [{"name": "call", "passed": False, "detail": str(error)}]
            if isinstance(error, LLMUnavailable):
                outcome.attempts, outcome.latency_s = error.attempts, error.latency_s
            return outcome
        outcome.raw_response = result.raw
        outcome.input_tokens, outcome.output_tokens = result.input_tokens, result.output_tokens
        outcome.cost_usd, outcome.latency_s, outcome.attempts = result.cost_usd, result.latency_s, result.attempts
        try:
            fields = SummaryFields.model_validate(result.data)
        except ValidationError as error:
            problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
            outcome.status = "invalid"
            outcome.error = f"the reply does not fit the summary model: {problem}"
            outcome.reasons = [f"schema: {outcome.error}"]
            outcome.checks = [{"name": "schema", "passed": False, "detail": outcome.error}]
            return outcome
        return _finish(outcome, fields, paper, llm_notice(self.model), self.policy)


def paper_from_row(row: dict[str, Any]) -> PaperInput:
    """A store row (current_papers joined with labels and methods) as generator input."""
    labels = {key: row.get(key) for key in ("design", "pem", "evidence_level", "criteria")}
    sections = tuple(
        (s.get("label") or s.get("category"), s.get("text") or "")
        for s in (row.get("abstract_sections") or []) if isinstance(s, dict)
    )
    return PaperInput(title=row.get("title") or "", abstract=row.get("abstract"), methods=row.get("methods"),
                      labels=normalise_labels(labels), pmid=row.get("pmid"), content_hash=row.get("content_hash"),
                      sections=sections)


class CallCollector:
    """Thread-safe buffer for ``llm_calls`` rows, drained by the writing thread."""

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.total = 0

    def __call__(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._rows.append(entry)
            self.total += 1

    def drain(self) -> list[dict[str, Any]]:
        with self._lock:
            rows, self._rows = self._rows, []
        return rows


def make_backend(settings: Settings, *, call_log: Callable[[dict[str, Any]], None] | None = None,
                 llm_options: dict[str, Any] | None = None,
                 policy: checks.CheckPolicy | None = None) -> ExtractiveBackend | LLMBackend:
    """The extractive backend when no endpoint is configured, else the LLM backend."""
    if not settings.llm_base_url:
        return ExtractiveBackend(policy)
    from generator.llm import LLMClient

    client = LLMClient(settings, call_log=call_log, expected_output_tokens=EXPECTED_OUTPUT_TOKENS,
                       **(llm_options or {}))
    return LLMBackend(client, policy=policy)


def estimate_call(backend: LLMBackend, paper: PaperInput, prices: dict[str, dict[str, float]],
                  output_tokens: int = EXPECTED_OUTPUT_TOKENS) -> tuple[int, int, float]:
    """(input tokens, output tokens, USD) a call costs, from text length and the price table.

    With the default ``output_tokens`` it is the expected cost (what a dry run reports); with the
    reply limit it is the most the call can cost (what a cost cap reserves).
    """
    from generator.llm import cost_usd, estimate_tokens

    text = json.dumps(backend.messages(paper), ensure_ascii=False) + json.dumps(summary_json_schema())
    tokens_in = estimate_tokens(text)
    return tokens_in, output_tokens, cost_usd(prices, backend.model, tokens_in, output_tokens) or 0.0


@dataclass(slots=True)
class _Job:
    paper: PaperInput
    backend: Backend
    input_hash: str
    estimate_usd: float = 0.0


def generate_pending(store: Store, settings: Settings, *, run_id: str | None, max_cost: float | None = None,
                     pmids: Sequence[str] | None = None, since: str | date | datetime | None = None,
                     regenerate_all: bool = False, dry_run: bool = False, progress: Progress | None = None,
                     llm_options: dict[str, Any] | None = None, commit_every: int = 25,
                     policy: checks.CheckPolicy | None = None) -> dict[str, Any]:
    """Generate, check and store summaries for current papers that lack one; returns counts.

    ``pmids``/``since`` narrow the selection; ``regenerate_all`` makes new rows
    even where one exists for the same inputs. ``dry_run`` returns how many
    calls would be made and their estimated cost, and calls nothing.
    """
    if max_cost is not None and max_cost < 0:
        raise ValueError("max_cost must be zero or more")
    since_value = date.fromisoformat(since) if isinstance(since, str) else since
    collector = CallCollector()
    backend = make_backend(settings, call_log=collector, llm_options=llm_options, policy=policy)
    offline = ExtractiveBackend(policy) if isinstance(backend, LLMBackend) else backend
    try:
        rows = summary_store.papers_to_summarise(store, pmids=pmids, since=since_value)
        done = set() if regenerate_all else summary_store.done_keys(store, pmids=[r["pmid"] for r in rows] if pmids else None)
        jobs: list[_Job] = []
        skipped = 0
        for row in rows:
            paper = paper_from_row(row)
            # A paper with no abstract or methods gets no LLM call: nothing to ground it on.
            chosen = backend if paper.has_body else offline
            key_hash = chosen.input_hash(paper)
            if (paper.pmid, key_hash, GENERATOR_VERSION, chosen.model) in done:
                skipped += 1
                continue
            jobs.append(_Job(paper, chosen, key_hash))
        llm_jobs = [j for j in jobs if isinstance(j.backend, LLMBackend)]
        priced = not llm_jobs or _priced(settings, backend.model)
        if max_cost is not None and not priced and not dry_run:
            raise ConfigError(f"a cost cap of ${max_cost} needs the price of model {backend.model!r}: add it to "
                              "llm_prices (USD per million input and output tokens), or run without a cap")
        for job in llm_jobs:  # the most each call can cost: the cap is never passed
            job.estimate_usd = estimate_call(job.backend, job.paper, settings.llm_prices,
                                             output_tokens=settings.llm_max_output_tokens)[2]
        counts: dict[str, Any] = {
            "selected": len(rows), "skipped_existing": skipped, "pending": len(jobs),
            "backend": backend.name, "model": backend.model, "generator_version": GENERATOR_VERSION,
            "checks_version": checks.CHECKS_VERSION, "prompt_hash": backend.prompt_hash[:12],
        }
        if dry_run:
            tokens = [estimate_call(j.backend, j.paper, settings.llm_prices) for j in llm_jobs]
            counts.update(
                dry_run=True, calls=len(llm_jobs), offline=len(jobs) - len(llm_jobs),
                estimated_input_tokens=sum(t[0] for t in tokens), estimated_output_tokens=sum(t[1] for t in tokens),
                estimated_cost_usd=round(sum(t[2] for t in tokens), 6), price_known=priced,
            )
            return counts
        tally = _run_jobs(store, jobs, collector, settings=settings, run_id=run_id, max_cost=max_cost,
                          progress=progress, commit_every=commit_every)
        counts.update(tally)
        counts["llm_calls"] = collector.total
        counts["price_known"] = priced
        return counts
    finally:
        client = getattr(backend, "client", None)
        if client is not None:
            client.close()


def _priced(settings: Settings, model: str) -> bool:
    from generator.llm import cost_usd

    return cost_usd(settings.llm_prices, model, 0, 0) is not None


def _run_jobs(store: Store, jobs: list[_Job], collector: CallCollector, *, settings: Settings, run_id: str | None,
              max_cost: float | None, progress: Progress | None, commit_every: int) -> dict[str, Any]:
    statuses: Counter[str] = Counter()
    failures: list[dict[str, str]] = []
    pending_rows: list[dict[str, Any]] = []
    totals = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
    finished = 0

    def record(outcome: SummaryOutcome) -> None:
        nonlocal finished
        statuses[outcome.status] += 1
        totals["input_tokens"] += outcome.input_tokens
        totals["output_tokens"] += outcome.output_tokens
        totals["cost_usd"] += outcome.cost_usd
        if outcome.status == "failed" and len(failures) < MAX_LISTED_FAILURES:
            failures.append({"pmid": outcome.pmid or "", "error": outcome.error or ""})
        pending_rows.append(outcome.as_row())
        finished += 1
        if len(pending_rows) >= commit_every:
            flush()
        if progress:
            progress(finished, len(jobs))

    def flush() -> None:
        if pending_rows or collector.total:
            summary_store.write_summaries(store, list(pending_rows), collector.drain(), run_id=run_id)
            pending_rows.clear()

    offline_jobs = [j for j in jobs if not isinstance(j.backend, LLMBackend)]
    llm_jobs = [j for j in jobs if isinstance(j.backend, LLMBackend)]
    left_for_budget = 0
    try:
        for job in offline_jobs:
            record(job.backend.generate(job.paper, job.input_hash))
        if llm_jobs:
            left_for_budget = _run_llm_jobs(llm_jobs, record, settings=settings, max_cost=max_cost, totals=totals)
    finally:
        flush()
    return {
        "generated": finished,
        "ok": statuses["ok"], "flagged": statuses["flagged"], "invalid": statuses["invalid"],
        "failed": statuses["failed"], "left_for_budget": left_for_budget,
        "input_tokens": totals["input_tokens"], "output_tokens": totals["output_tokens"],
        "cost_usd": round(totals["cost_usd"], 6), "failures": failures,
    }


def _run_llm_jobs(jobs: list[_Job], record: Callable[[SummaryOutcome], None], *, settings: Settings,
                  max_cost: float | None, totals: dict[str, Any]) -> int:
    """Run LLM jobs with at most ``llm_concurrency`` in flight; returns how many the budget left undone."""
    workers = settings.llm_concurrency
    queue = list(reversed(jobs))
    in_flight: dict[Future[SummaryOutcome], _Job] = {}
    reserved = 0.0
    stopped = False
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="summary") as pool:
        try:
            while queue or in_flight:
                while queue and not stopped and len(in_flight) < workers * 2:
                    job = queue[-1]
                    if max_cost is not None and totals["cost_usd"] + reserved + job.estimate_usd > max_cost:
                        stopped = True
                        break
                    queue.pop()
                    reserved += job.estimate_usd
                    in_flight[pool.submit(job.backend.generate, job.paper, job.input_hash)] = job
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    job = in_flight.pop(future)
                    reserved -= job.estimate_usd
                    try:
                        outcome = future.result()
                    except Exception as error:  # backends return failures as outcomes; this keeps a run alive regardless
                        outcome = SummaryOutcome(pmid=job.paper.pmid, content_hash=job.paper.content_hash,
                                                 input_hash=job.input_hash, prompt_hash=job.backend.prompt_hash,
                                                 backend=job.backend.name, model=job.backend.model, status="failed",
                                                 error=f"{type(error).__name__}: {error}")
                    record(outcome)
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
    return len(queue)


def run_regeneration(*, pmids: list[str] | None, since: date | None, regenerate_all: bool, dry_run: bool,
                   max_cost: float | None, db_path: Path | None = None,
                   overrides: dict[str, Any] | None = None, progress: Progress | None = None,
                   llm_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Open the store, record a run, generate, and record how it ended. Shared by the CLI and the flow.

    An explicit selection (``pmids`` or ``since``) or ``regenerate_all`` forces
    new summaries for the selected papers; with none of them only papers that
    lack a summary for the current inputs are generated.
    """
    settings = settings_for_database(db_path, overrides)
    force = bool(regenerate_all or pmids or since)
    parameters = {"pmids": pmids, "since": since.isoformat() if since else None, "all": regenerate_all,
                  "dry_run": dry_run, "max_cost": max_cost}
    versions = {"generator": GENERATOR_VERSION, "checks": checks.CHECKS_VERSION}
    with Store.open(settings.database, snapshot=settings.snapshot) as store:
        if dry_run:
            counts = generate_pending(store, settings, run_id=None, max_cost=max_cost, pmids=pmids, since=since,
                                      regenerate_all=force, dry_run=True, llm_options=llm_options)
            counts["status"] = "dry run"
            return counts
        run_id = start_run(store, "regenerate", parameters=parameters, versions=versions)
        try:
            counts = generate_pending(store, settings, run_id=run_id, max_cost=max_cost, pmids=pmids, since=since,
                                      regenerate_all=force, progress=progress, llm_options=llm_options)
        except BaseException as error:
            finish_run(store, run_id, status="failed", error=f"{type(error).__name__}: {error}")
            raise
        status = "partial" if counts.get("left_for_budget") or counts.get("failed") else "completed"
        finish_run(store, run_id, status=status, counts={k: v for k, v in counts.items() if k != "failures"})
        counts.update(run_id=run_id, status=status)
        return counts


def report_markdown(counts: dict[str, Any], *, title: str = "Regenerate") -> str:
    """A run report for a Prefect artifact: versions, counts, cost and the failures."""
    lines = [f"# {title}", ""]
    lines.append(f"Generator v{counts.get('generator_version')} / checks v{counts.get('checks_version')} / "
                 f"prompt {counts.get('prompt_hash')} / backend {counts.get('backend')} ({counts.get('model')})")
    lines += ["", "| measure | value |", "|---|---|"]
    for key in ("selected", "skipped_existing", "pending", "generated", "ok", "flagged", "invalid", "failed",
                "left_for_budget", "llm_calls", "input_tokens", "output_tokens", "cost_usd", "calls",
                "estimated_cost_usd", "price_known"):
        if key in counts:
            lines.append(f"| {key} | {counts[key]} |")
    failures = counts.get("failures") or []
    if failures:
        lines += ["", "## Failures", "", "| pmid | error |", "|---|---|"]
        for failure in failures:
            error = str(failure.get("error", "")).replace("|", "\\|").replace("\n", " ")[:300]
            lines.append(f"| {failure.get('pmid')} | {error} |")
    if counts.get("left_for_budget"):
        lines += ["", f"The budget cap stopped the run with {counts['left_for_budget']} paper(s) left; "
                      "the next run carries on with them."]
    return "\n".join(lines) + "\n"
