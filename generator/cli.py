"""Generator commands for the ``atlas`` CLI: ``regenerate`` and ``generate``.

``register(app, labeler=...)`` adds them to the root app built in
``atlas/cli.py``; the optional ``labeler`` (an input line -> scanner labels) is
supplied there so this package never imports the scanner.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from atlas.config import load_settings
from atlas.errors import AtlasError, ConfigError, InputError
from generator.pipeline import run_regeneration


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _since(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (use YYYY-MM-DD)", param_hint="--since") from None


def register(app: typer.Typer, *, labeler: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
             regenerate_flow: Callable[..., dict[str, Any]] | None = None, **_: Any) -> None:
    """Add ``regenerate`` and ``generate`` to the root app.

    ``regenerate_flow`` (the Prefect flow ``flows.regenerate.regenerate``) runs
    ``atlas regenerate`` when given, so the run and its report appear in
    Prefect; without it the command calls the same function directly.
    """

    @app.command("regenerate")
    def regenerate(
        pmid: Optional[list[str]] = typer.Option(None, "--pmid", help="Regenerate these PMIDs (repeatable)."),
        since: Optional[str] = typer.Option(None, "--since", help="Regenerate papers fetched on or after DATE."),
        all_: bool = typer.Option(False, "--all", help="Regenerate every current paper."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Count calls and estimate cost; call nothing."),
        max_cost: Optional[float] = typer.Option(None, "--max-cost", min=0, help="Stop once this many USD are spent."),
        db: Optional[Path] = typer.Option(None, "--db", help="Database file (default: from settings)."),
    ) -> None:
        """Write summaries for papers that lack one for the current generator (or for a selection)."""
        chosen = [name for name, used in (("--pmid", bool(pmid)), ("--since", since is not None), ("--all", all_)) if used]
        if len(chosen) > 1:
            raise typer.BadParameter(f"use only one of --pmid, --since and --all (got {' and '.join(chosen)})")
        since_date = _since(since)
        try:
            if regenerate_flow is not None:
                counts = regenerate_flow(pmids=pmid or None, since=since_date.isoformat() if since_date else None,
                                         all=all_, dry_run=dry_run, max_cost=max_cost,
                                         db_path=str(db) if db else None)
            else:
                counts = run_regeneration(pmids=pmid or None, since=since_date, regenerate_all=all_,
                                          dry_run=dry_run, max_cost=max_cost, db_path=db)
        except (ConfigError, InputError) as error:
            _fail(str(error))
            return
        except AtlasError as error:
            _fail(f"{type(error).__name__}: {error}", code=1)
            return
        if dry_run:
            typer.echo(f"dry run: {counts['pending']} paper(s) to summarise, {counts['calls']} LLM call(s), "
                       f"~{counts['estimated_input_tokens']} input + ~{counts['estimated_output_tokens']} output "
                       f"tokens, estimated ${counts['estimated_cost_usd']:.4f}"
                       + ("" if counts.get("price_known", True) else " (no price configured for this model)"))
            return
        typer.echo(
            f"regenerate {counts['status']}: {counts.get('generated', 0)} generated "
            f"(ok {counts.get('ok', 0)}, flagged {counts.get('flagged', 0)}, invalid {counts.get('invalid', 0)}, "
            f"failed {counts.get('failed', 0)}), {counts.get('skipped_existing', 0)} unchanged, "
            f"{counts.get('llm_calls', 0)} LLM call(s), ${counts.get('cost_usd', 0):.4f}"
        )
        if counts.get("left_for_budget"):
            typer.echo(f"budget reached: {counts['left_for_budget']} paper(s) left for the next run")
        for failure in counts.get("failures", []):
            typer.echo(f"  failed {failure['pmid']}: {failure['error']}", err=True)

    @app.command("generate")
    def generate(
        input: Path = typer.Option(..., "--input", help="JSONL: id, pmid, title, abstract, methods per line."),
        output: Path = typer.Option(..., "--output", help="JSONL with one summary per input line."),
    ) -> None:
        """Summarise papers from a JSONL file without touching the database."""
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        from generator.contract import run_contract

        bar = Progress("summarising", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       console=Console(stderr=True), transient=True)
        task = bar.add_task("summarising", total=None)
        try:
            with bar:
                counts = run_contract(input, output, load_settings(), labeler=labeler,
                                      progress=lambda done, total: bar.update(task, completed=done, total=total))
        except (ConfigError, InputError) as error:
            _fail(str(error))
            return
        except AtlasError as error:
            _fail(f"{type(error).__name__}: {error}", code=1)
            return
        typer.echo(json.dumps(counts))
