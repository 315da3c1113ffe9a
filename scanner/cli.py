"""Scanner commands, added to the root ``atlas`` app by ``register``.

    atlas policy validate FILE      atlas policy show [FILE]      atlas policy diff A B
    atlas scan classify --input IN.jsonl --output OUT.jsonl [--policy FILE]
    atlas reclassify --policy FILE [--db PATH]
    atlas eval --labels FILE [--policy FILE]
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from atlas.errors import AtlasError

PolicyOption = Annotated[Optional[Path], typer.Option("--policy", help="Policy YAML (default policies/v0.1.yaml).")]


def register(app: typer.Typer, *, reclassify_flow: Callable[..., dict[str, Any]] | None = None,
             console: Console | None = None, **_: Any) -> None:
    """Add the scanner's commands to ``app``.

    ``reclassify_flow`` (the Prefect flow ``flows.reclassify.reclassify``) runs
    ``atlas reclassify`` when given; without it the command calls the same
    functions directly, which keeps the scanner free of imports from ``flows``.
    """
    out = console or Console()
    err = Console(stderr=True)

    def fail(message: str) -> None:
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(1)

    policy_app = typer.Typer(help="Validate, show and compare criteria policies.", no_args_is_help=True)
    scan_app = typer.Typer(help="Classify papers offline (JSONL in, JSONL out).", no_args_is_help=True)
    app.add_typer(policy_app, name="policy")
    app.add_typer(scan_app, name="scan")

    def load(path: Path | None):
        from scanner.policy import load_policy, resolve_policy_path

        try:
            return load_policy(resolve_policy_path(path))
        except AtlasError as error:
            fail(str(error))

    @policy_app.command("validate")
    def policy_validate(file: Path) -> None:
        """Check a policy file; errors name the field and the line."""
        policy = load(file)
        out.print(f"ok: {file} policy v{policy.version} sha256 {policy.hash}", highlight=False)

    @policy_app.command("show")
    def policy_show(file: Annotated[Optional[Path], typer.Argument()] = None) -> None:
        """Print a policy: criteria, what each requires, rules and badge wording."""
        policy = load(file)
        out.print(f"[bold]policy v{policy.version}[/]  {policy.title}\nsha256 {policy.hash}\nfile {policy.source}")
        table = Table(title="criteria catalogue")
        for column in ("id", "name", "year", "requires PEM", "aliases"):
            table.add_column(column, overflow="fold")
        for c in policy.criteria:
            requires = {True: "yes", False: "no", None: "unknown"}[c.requires_pem]
            table.add_row(c.id, c.name, str(c.year or ""), requires, ", ".join(c.aliases))
        out.print(table)
        rules = Table(title="rules")
        rules.add_column("rule")
        rules.add_column("value")
        for key, value in policy.rules.model_dump().items():
            rules.add_row(key, str(value))
        for family, rule in policy.ambiguous.items():
            by_year = "; ".join(f"{'before' if r.before else 'from'} {r.before or r.from_} -> {r.id}"
                                for r in rule.by_year)
            rules.add_row(f"bare '{family}'", f"{by_year}; no year -> {rule.default}")
        out.print(rules)
        badges = Table(title="badges")
        badges.add_column("pem")
        badges.add_column("label")
        badges.add_column("explainer", overflow="fold")
        for key, badge in policy.badges.items():
            badges.add_row(key, badge.label, badge.explainer)
        out.print(badges)

    @policy_app.command("diff")
    def policy_diff(a: Path, b: Path) -> None:
        """Every setting that differs between two policies."""
        from scanner.policy import diff_policies

        first, second = load(a), load(b)
        changes = diff_policies(first, second)
        if not changes:
            out.print("no differences")
            return
        out.print(f"v{first.version} ({first.hash[:12]}) -> v{second.version} ({second.hash[:12]}): "
                  f"{len(changes)} change(s)", highlight=False)
        for path, x, y in changes:
            out.print(f"  {path}: {json.dumps(x, ensure_ascii=False)} -> {json.dumps(y, ensure_ascii=False)}",
                      highlight=False, markup=False, soft_wrap=True)

    @scan_app.command("classify")
    def scan_classify(
        input: Annotated[Path, typer.Option("--input", help="JSONL: id, pmid, title, abstract, methods.")],
        output: Annotated[Path, typer.Option("--output", help="JSONL: id, criteria, pem, design, evidence.")],
        policy: PolicyOption = None,
    ) -> None:
        """Classify papers from a JSONL file; writes all lines or nothing."""
        from scanner.contract import classify_file

        chosen = load(policy)
        try:
            count = classify_file(input, output, chosen)
        except AtlasError as error:
            fail(str(error))
        err.print(f"classified {count} papers into {output} (policy v{chosen.version})", highlight=False)

    @app.command("reclassify")
    def reclassify_command(
        policy: Annotated[Path, typer.Option("--policy", help="The policy to apply to every stored extraction.")],
        db: Annotated[Optional[Path], typer.Option("--db", help="Database file (default: settings).")] = None,
    ) -> None:
        """Re-decide every stored paper under a policy, from stored facts (no text, no LLM)."""
        chosen = load(policy)
        if reclassify_flow is not None:
            counts = reclassify_flow(policy_path=str(chosen.source), db_path=str(db) if db else None)
        else:
            counts = _reclassify_directly(chosen, db, fail)
        table = Table(title=f"reclassify under policy v{chosen.version}")
        table.add_column("measure")
        table.add_column("value", justify="right")
        for key, value in counts.items():
            table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
        out.print(table)

    @app.command("eval")
    def eval_command(
        labels: Annotated[Path, typer.Option("--labels", help="Labelled JSONL (see tests/labels/README.md).")],
        policy: PolicyOption = None,
        show_errors: Annotated[bool, typer.Option("--errors", help="List every disagreement.")] = False,
    ) -> None:
        """Accuracy on labelled papers: per-criterion P/R/F1, PEM accuracy and confusion, quote validity."""
        from scanner.evaluate import evaluate, load_labels

        chosen = load(policy)
        try:
            report = evaluate(load_labels(labels), chosen)
        except AtlasError as error:
            fail(str(error))
        out.print(render_report(report, title=f"{labels} under policy v{chosen.version}"))
        if show_errors:
            for e in report.errors:
                out.print(f"{e['id']}: gold {e['gold']}  got {e['got']}", highlight=False)


def render_report(report: Any, *, title: str) -> Table:
    """The evaluation report as rich tables (criteria, PEM confusion, headline figures)."""
    from rich.console import Group

    crit = Table(title=f"criteria: {title}")
    for column in ("criterion", "precision", "recall", "F1", "support"):
        crit.add_column(column, justify="right" if column != "criterion" else "left")
    for cid, m in report.per_criterion.items():
        crit.add_row(cid, f"{m['precision']:.2f}", f"{m['recall']:.2f}", f"{m['f1']:.2f}", str(m["support"]))
    confusion = Table(title="PEM confusion (rows gold, columns predicted)")
    values = list(report.confusion)
    confusion.add_column("gold \\ predicted")
    for v in values:
        confusion.add_column(v, justify="right")
    for g in values:
        confusion.add_row(g, *(str(report.confusion[g][p]) for p in values))
    head = Table(title="summary")
    head.add_column("measure")
    head.add_column("value", justify="right")
    for key, value in report.summary().items():
        head.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    return Group(crit, confusion, head)  # type: ignore[return-value]


def _reclassify_directly(policy: Any, db: Path | None, fail: Callable[[str], None]) -> dict[str, Any]:
    from atlas.config import load_settings
    from atlas.store import Store
    from atlas.store.runs import finish_run, start_run
    from scanner.extract import SCANNER_VERSION
    from scanner.pipeline import reclassify_all

    try:
        path = db or load_settings().database
        with Store.open(path) as store:
            run_id = start_run(store, "reclassify", parameters={"policy": policy.source},
                               versions={"scanner": SCANNER_VERSION, "policy": policy.version,
                                         "policy_hash": policy.hash})
            try:
                counts = reclassify_all(store, policy, run_id=run_id)
            except BaseException as error:
                finish_run(store, run_id, status="failed", error=f"{type(error).__name__}: {error}")
                raise
            finish_run(store, run_id, status="completed", counts=counts)
    except AtlasError as error:
        fail(str(error))
    return counts
