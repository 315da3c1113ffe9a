"""The ``atlas`` command: one entry point with subcommands.

This module is the composition root: it builds the settings, and imports the
flows, the scanner and the generator only inside the commands that need them,
so ``atlas --help`` stays fast and nothing runs at import time.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from atlas.config import Settings, load_settings
from atlas.errors import AtlasError, DatabaseLocked, ParseError

app = typer.Typer(
    name="atlas",
    help="A living, versioned evidence base of ME/CFS research, built nightly from PubMed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except AtlasError as error:
        _fail(str(error))
    except Exception as error:  # pydantic's ValidationError names the bad setting
        _fail(f"invalid settings: {error}")


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code)


DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Folder of the database and exports (ATLAS_DATA_DIR).")]


def _prefect_environment() -> None:
    """Telemetry off and a patient ephemeral engine, unless the user set otherwise."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


class _NoTracebackForAtlasErrors(logging.Filter):
    """Prefect logs a failed flow run with its traceback; for the atlas's own errors the message says it all.

    Set on the console handler only, so the run's logs in the Prefect API keep the traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], AtlasError):
            record.exc_info = None
            record.exc_text = None
        return True


def _run_flow(call) -> dict[str, Any]:
    _prefect_environment()
    for handler in logging.getLogger().handlers:  # Prefect's console handler, set up when flows were imported
        if not any(isinstance(f, _NoTracebackForAtlasErrors) for f in handler.filters):
            handler.addFilter(_NoTracebackForAtlasErrors())
    try:
        return call()
    except DatabaseLocked as error:
        _fail(str(error))
    except AtlasError as error:
        _fail(f"{type(error).__name__}: {error}")


@app.command()
def nightly(
    as_of: Annotated[Optional[datetime], typer.Option(formats=["%Y-%m-%d"], help="Treat this day as today.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Fetch new and revised papers since the last good run, store, classify, summarise and publish."""
    settings = _settings(data_dir=data_dir)
    from flows.nightly import nightly as nightly_flow

    counts = _run_flow(lambda: nightly_flow(as_of=as_of.date() if as_of else None,
                                            overrides=_overrides(settings)))
    _print_counts("nightly", counts)


@app.command()
def backfill(
    start: Annotated[datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="First Entrez date.")],
    end: Annotated[datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="Last Entrez date.")],
    data_dir: DataDir = None,
) -> None:
    """Fetch an explicit range of Entrez dates (the nightly watermark is not moved)."""
    settings = _settings(data_dir=data_dir)
    if end < start:
        _fail(f"--from {start.date()} is after --to {end.date()}")
    from flows.nightly import backfill as backfill_flow

    counts = _run_flow(lambda: backfill_flow(start=start.date(), end=end.date(), overrides=_overrides(settings)))
    _print_counts("backfill", counts)


def _overrides(settings: Settings) -> dict[str, Any]:
    """Settings that must reach the flow run, as plain JSON (secrets are read again from the environment)."""
    return {"data_dir": str(settings.data_dir),
            **({"db_path": str(settings.db_path)} if settings.db_path else {}),
            **({"snapshot_path": str(settings.snapshot_path)} if settings.snapshot_path else {})}


def _print_counts(title: str, counts: dict[str, Any]) -> None:
    table = Table(title=f"{title}: {counts.get('status', '?')}", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in counts.items():
        if key in {"new_pmids", "versions"}:
            continue
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                table.add_row(f"{key}.{sub}", str(subvalue))
        else:
            table.add_row(key, str(value))
    console.print(table)


def _open_for_reading(settings: Settings):
    """The live database read-only if free, else the published snapshot."""
    from atlas.store import Store

    try:
        return Store.open(settings.database, read_only=True, snapshot=settings.snapshot)
    except DatabaseLocked:
        if not settings.snapshot.exists():
            raise
        err_console.print(f"[yellow]a run holds the live database; reading the snapshot {settings.snapshot}[/]")
        return Store.open(settings.snapshot, read_only=True)


@app.command()
def status(data_dir: DataDir = None, limit: int = typer.Option(10, help="How many runs to list.")) -> None:
    """Show the last runs, the watermark and how many papers are stored."""
    settings = _settings(data_dir=data_dir)
    if not settings.database.exists() and not settings.snapshot.exists():
        _fail(f"no database at {settings.database}: run `atlas nightly` (or `make demo`) first")
    from atlas.store.runs import recent_runs

    try:
        store = _open_for_reading(settings)
    except DatabaseLocked as error:
        _fail(str(error))
    with store:
        table = Table(title=f"last runs ({store.path})")
        for column in ("started", "flow", "status", "counts", "error"):
            table.add_column(column, overflow="fold")
        for run in recent_runs(store, limit):
            counts = json.loads(run["counts"]) if run["counts"] else {}
            brief = ", ".join(f"{k}={v}" for k, v in counts.items() if isinstance(v, (int, float)) and v)
            table.add_row(f"{run['started_at']:%Y-%m-%d %H:%M}", run["flow"], run["status"], brief,
                          (run["error"] or "")[:200])
        console.print(table)
        papers = store.conn.execute("SELECT count(*) FROM current_papers").fetchone()[0]
        deleted = store.conn.execute("SELECT count(*) FROM deleted_papers").fetchone()[0]
        failures = store.conn.execute("SELECT count(*) FROM paper_failures").fetchone()[0]
        marks = store.conn.execute("SELECT name, value FROM current_watermarks").fetchall()
        console.print(f"papers: {papers}   deleted: {deleted}   failure rows: {failures}   "
                      + "   ".join(f"watermark {n}: {v}" for n, v in marks))


@app.command()
def show(pmid: str, data_dir: DataDir = None, raw: bool = typer.Option(False, help="Print the raw record too.")) -> None:
    """Show everything stored about one paper."""
    settings = _settings(data_dir=data_dir)
    try:
        store = _open_for_reading(settings)
    except DatabaseLocked as error:
        _fail(str(error))
    with store:
        cursor = store.conn.execute("SELECT * FROM current_papers WHERE pmid = ?", [pmid])
        row = cursor.fetchone()
        if row is None:
            _fail(f"PMID {pmid} is not in {store.path}")
        record = dict(zip([d[0] for d in cursor.description], row))
        raw_text = record.pop("raw", None)
        for extra_view in ("evidence",):
            if _has_relation(store, extra_view):
                cur = store.conn.execute(f"SELECT * FROM {extra_view} WHERE pmid = ?", [pmid])
                extra = cur.fetchone()
                if extra:
                    record[extra_view] = {d[0]: v for d, v in zip(cur.description, extra) if d[0] not in record}
        console.print_json(json.dumps(record, default=str, ensure_ascii=False))
        if raw:
            text = store.conn.execute(
                "SELECT raw FROM records WHERE pmid = ? AND content_hash = ?", [pmid, record["content_hash"]]
            ).fetchone()
            console.print(text[0].decode("utf-8", "replace") if text else raw_text, markup=False, highlight=False)


def _has_relation(store, name: str) -> bool:
    return bool(store.conn.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchone()[0])


@app.command()
def sql(
    query: str,
    data_dir: DataDir = None,
    output: str = typer.Option("table", "--format", help="table | csv | jsonl"),
) -> None:
    """Run a read-only SQL query on the published snapshot (no files are read or written besides it)."""
    settings = _settings(data_dir=data_dir)
    if output not in ("table", "csv", "jsonl"):
        _fail(f"--format {output!r}: choose table, csv or jsonl")
    if not settings.snapshot.exists():
        _fail(f"no snapshot at {settings.snapshot}: it is published at the end of every run")
    import duckdb

    # Read-only covers the database; with external access off, COPY TO, read_csv and ATTACH cannot touch other files.
    with duckdb.connect(str(settings.snapshot), read_only=True, config={"enable_external_access": False}) as conn:
        try:
            cursor = conn.execute(query)
            if cursor.description is None:
                return
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        except duckdb.Error as error:
            _fail(f"query failed: {error}")
    if output == "jsonl":
        for row in rows:
            sys.stdout.write(json.dumps(dict(zip(names, row)), default=str, ensure_ascii=False) + "\n")
    elif output == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(names)
        writer.writerows(rows)
    else:
        table = Table(*names)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        console.print(table)


@app.command("parse")
def parse_files(
    files: list[Path],
    workers: int = typer.Option(
        1, "--workers", min=1, help="processes reading the records, this one and N-1 helpers (large files: one per core)"
    ),
) -> None:
    """Parse PubMed XML files (plain or .gz) and print one JSON line per record."""
    from atlas.models import BadRecord, Deletion
    from atlas.pubmed.parse import iter_records

    out = sys.stdout
    for path in files:
        if not path.exists():
            _fail(f"{path}: no such file")
        try:
            for item in iter_records(path, workers=workers):
                if isinstance(item, Deletion):
                    data = {"deleted": True, "pmid": item.pmid, "version": item.version}
                elif isinstance(item, BadRecord):
                    data = {"error": item.error, "pmid": item.pmid, "file": str(path)}
                else:
                    data = item.to_json()
                    data.pop("raw_xml", None)
                out.write(json.dumps(data, ensure_ascii=False) + "\n")
        except ParseError as error:
            _fail(f"{path}: {error}")


@app.command("import")
def import_medline(files: list[Path], data_dir: DataDir = None) -> None:
    """Load PubMed-format exports (.nbib / MEDLINE .txt saved from the PubMed website) into the store."""
    settings = _settings(data_dir=data_dir)
    from atlas.pubmed.medline import iter_medline
    from atlas.store import Store
    from atlas.store.papers import BatchCounts, write_batch
    from atlas.store.runs import finish_run, start_run

    totals = BatchCounts()
    try:
        store = Store.open(settings.database, snapshot=settings.snapshot)
    except DatabaseLocked as error:
        _fail(str(error))
    with store:
        run_id = start_run(store, "import", parameters={"files": [str(f) for f in files]})
        for path in files:
            if not path.exists():
                finish_run(store, run_id, status="failed", error=f"{path}: no such file")
                _fail(f"{path}: no such file")
            totals.add(write_batch(store, iter_medline(path), run_id=run_id, source="import"))
        finish_run(store, run_id, status="completed", counts=totals.as_dict())
        store.publish_snapshot(settings.snapshot)
    _print_counts("import", {"status": "completed", **totals.as_dict()})


@app.command("load")
def load_xml(
    files: list[Path],
    data_dir: DataDir = None,
    all_records: bool = typer.Option(False, "--all", help="store every record, not only papers already stored"),
    workers: int = typer.Option(1, "--workers", min=1, help="processes reading the records (see atlas parse)"),
    batch: int = typer.Option(5_000, "--batch", min=1, help="records per transaction"),
) -> None:
    """Load PubMed XML files (baseline or daily update files, plain or .gz) into the store.

    Only papers already stored are updated unless --all is given; a DeleteCitation marks one deleted, history kept.
    """
    settings = _settings(data_dir=data_dir)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from atlas.ingest import load_pubmed_xml
    from atlas.store import Store
    from atlas.store.papers import BatchCounts
    from atlas.store.runs import finish_run, start_run

    missing = [str(path) for path in files if not path.is_file()]
    if missing:
        _fail(f"{', '.join(missing)}: no such file")
    try:
        store = Store.open(settings.database, snapshot=settings.snapshot)
    except DatabaseLocked as error:
        _fail(str(error))
    totals, skipped = BatchCounts(), 0
    with store:
        run_id = start_run(store, "load", parameters={"files": [str(f) for f in files], "all": all_records})
        progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                            console=err_console, transient=True)
        with progress:
            for path in files:
                task = progress.add_task(f"{path.name}: reading")

                def show(counts, task=task, name=path.name) -> None:
                    progress.update(task, description=f"{name}: {counts.read:,} records read, "
                                                      f"{counts.stored.inserted:,} stored, {counts.skipped:,} not ours")

                try:
                    counts = load_pubmed_xml(store, path, run_id=run_id, known_only=not all_records,
                                             batch_size=batch, workers=workers, on_batch=show)
                except ParseError as error:
                    finish_run(store, run_id, status="failed", counts=totals.as_dict(), error=f"{path}: {error}")
                    store.publish_snapshot(settings.snapshot)
                    _fail(f"{path}: {error} (the records before it are stored)")
                totals.add(counts.stored)
                skipped += counts.skipped
        finish_run(store, run_id, status="completed", counts={**totals.as_dict(), "skipped": skipped})
        store.publish_snapshot(settings.snapshot)
    _print_counts("load", {"status": "completed", **totals.as_dict(), "not ours (skipped)": skipped})


@app.command("fake-eutils")
def fake_eutils(
    corpus: Annotated[Path, typer.Option(help="Folder of PubMed XML files to serve.")] = Path("data/sample/pubmed"),
    port: Annotated[int, typer.Option(help="Loopback port (0 picks a free one).")] = 8765,
    rate_limit: Annotated[float, typer.Option(help="Requests per second before 429.")] = 3.0,
) -> None:
    """Serve a corpus folder as a loopback NCBI E-utilities (for demos and tests)."""
    from atlas.fakes.eutils import serve

    if not corpus.is_dir():
        _fail(f"{corpus}: not a folder of PubMed XML files")
    serve(corpus, port, rate_limit)


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option(help="Where the demo database goes (wiped first).")] = Path("data/demo"),
    corpus: Annotated[Path, typer.Option(help="Demo corpus folder.")] = Path("data/sample/pubmed"),
) -> None:
    """Run the real nightly flow, night after night, on the bundled corpus against a loopback PubMed."""
    from atlas.demo import run_demo

    _prefect_environment()
    wide = console if console.is_terminal else Console(width=140)  # piped output: keep the tables readable
    try:
        run_demo(data_dir, corpus, wide)
    except AtlasError as error:
        _fail(str(error))


# --- service: a Prefect server, the deployments of prefect.yaml and a worker (atlas/server.py) ---


@app.command()
def server(
    host: Annotated[str, typer.Option(help="Address the Prefect server binds (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the Prefect API and UI.")] = 4200,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Do not start a worker for the pool.")] = False,
) -> None:
    """Run the pipeline as a service: Prefect server, work pool, deployments, worker; Ctrl-C stops it."""
    from atlas.server import ServiceOptions, run_service

    _prefect_environment()
    try:
        raise typer.Exit(run_service(ServiceOptions(host=host, port=port, worker=not no_worker), console))
    except AtlasError as error:
        _fail(str(error))


@app.command()
def deploy() -> None:
    """Apply prefect.yaml's deployments to the running server named by PREFECT_API_URL."""
    from atlas.server import deploy_to_configured_server

    _prefect_environment()
    try:
        deploy_to_configured_server(console)
    except AtlasError as error:
        _fail(str(error))



# --- commands from the scanner and the generator; flows are imported only when a command runs ---

def _reclassify_flow(**kwargs: Any) -> dict[str, Any]:
    _prefect_environment()
    from flows.reclassify import reclassify

    return reclassify(**kwargs)


def _regenerate_flow(**kwargs: Any) -> dict[str, Any]:
    _prefect_environment()
    from flows.regenerate import regenerate

    return regenerate(**kwargs)


def _scanner_labeler() -> Any:
    """Labels for `atlas generate`: the scanner's decision under the default policy, per input line."""
    from scanner.contract import classify_record
    from scanner.extract import Extractor
    from scanner.policy import load_policy

    state: dict[str, Any] = {}

    def label(item: dict[str, Any]) -> dict[str, Any]:
        if not state:
            state["policy"] = load_policy(load_settings().policy_path)
            state["extractor"] = Extractor()
        out = classify_record(item, state["policy"], state["extractor"])
        return {"design": out["design"], "pem": out["pem"], "criteria": out["criteria"],
                "evidence_level": state["policy"].evidence_levels.get(out["design"])}

    return label


def _register_components() -> None:
    from generator.cli import register as register_generator
    from scanner.cli import register as register_scanner

    register_scanner(app, reclassify_flow=_reclassify_flow, console=console)
    register_generator(app, labeler=_scanner_labeler(), regenerate_flow=_regenerate_flow)


_register_components()


@app.command()
def export(
    output: str = typer.Option("parquet", "--format", help="parquet | csv | jsonl"),
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder (default: DATA_DIR/export).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Write the documented views (evidence, histories, runs) as Parquet, CSV or JSON lines, from the snapshot."""
    from atlas.store import Store
    from atlas.store.export import FORMATS, export_views

    settings = _settings(data_dir=data_dir)
    if output not in FORMATS:
        _fail(f"unknown format {output!r}: choose parquet, csv or jsonl")
    if not settings.snapshot.exists():
        _fail(f"no snapshot at {settings.snapshot}: it is published at the end of every run")
    with Store.open(settings.snapshot, read_only=True) as store:
        written = export_views(store, out or settings.data_dir / "export", output)
    for path in written:
        console.print(f"wrote {path}")


@app.command()
def pages(
    out: Annotated[Path, typer.Option("--out", help="Folder for the static site.")] = Path("data/pages"),
    data_dir: DataDir = None,
) -> None:
    """Render the static evidence pages (one per study, plus a filterable index) from the snapshot."""
    from datetime import date as _date

    from atlas.pages import render_pages
    from atlas.store import Store
    from atlas.store.export import evidence_rows

    settings = _settings(data_dir=data_dir)
    if not settings.snapshot.exists():
        _fail(f"no snapshot at {settings.snapshot}: it is published at the end of every run")
    with Store.open(settings.snapshot, read_only=True) as store:
        rows = evidence_rows(store)
    with console.status(f"rendering {len(rows)} pages"):
        result = render_pages(rows, out, accessed=_date.today())
    console.print(f"{len(rows)} studies, {result.changed} files written, {len(result.skipped)} skipped: {result.index}")
    for pmid, reason in result.skipped:
        err_console.print(f"[yellow]skipped {pmid}: {reason}[/]")


def main() -> None:
    try:
        app()
    except DatabaseLocked as error:
        err_console.print(f"[bold red]error:[/] {error}")
        raise SystemExit(1) from None
