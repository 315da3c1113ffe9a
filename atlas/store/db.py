"""The DuckDB connection: opening, migrations, transactions, snapshots.

DuckDB allows one writing process. The pipeline is that process; analysts use
the snapshot published after each run. Opening the live file while a run holds
it raises ``DatabaseLocked`` with a message that points to the snapshot; so
does a second open of the live file in the process that already has it open.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from atlas.errors import DatabaseLocked

MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    """Numbered SQL files shipped in ``atlas/store/migrations``, in order."""
    found = []
    for entry in resources.files("atlas.store").joinpath("migrations").iterdir():
        match = MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {versions}")
    return found


def _lock_message(path: Path, error: Exception, snapshot: Path | None) -> str:
    holder = re.search(r"\(PID (\d+)\)", str(error))
    who = f"process {holder.group(1)}" if holder else "another process"
    hint = (
        f" Open the read-only snapshot instead: {snapshot}"
        if snapshot
        else " Open the published read-only snapshot instead (atlas sql uses it)."
    )
    return f"The database {path} is in use by {who} (a pipeline run holds its write lock).{hint}"


# How the live file is laid out. A checkpoint writes the rows committed since
# the last one as new row groups. With DuckDB's default row group (122,880
# rows) and its checkpoint vacuum, each checkpoint also merged the table's
# partly filled row groups, which shifts and re-compresses nearly every row
# after them: a bulk load of 5,000-row batches ran at a third of the speed.
# Every table here is append-only, so vacuum has no deleted rows to reclaim;
# it is off, and row groups of one vector (2,048 rows) bound what is left
# unmerged to one partly filled row group per checkpoint and table. The
# snapshot analysts read is written afresh with DuckDB's defaults, in full row
# groups, so they never see that.
LIVE_ROW_GROUP_SIZE = 2048
_RESERVED_CATALOGS = frozenset({"memory", "system", "temp"})


def connect(path: Path, *, read_only: bool = False, snapshot: Path | None = None) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB file, turning DuckDB's lock error into a clear ``DatabaseLocked``.

    A writable file is attached (under its stem, as ``duckdb.connect`` names
    it) so that its row group size can be set; see ``LIVE_ROW_GROUP_SIZE``.
    The snapshot and other read-only files open as they are.
    """
    path = Path(path)
    try:
        if read_only:
            return duckdb.connect(str(path), read_only=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = duckdb.connect()
        name = path.name.split(".")[0] if path.name.split(".")[0] not in _RESERVED_CATALOGS else "atlas"
        try:
            conn.execute(f"ATTACH '{_sql_path(path)}' AS {_identifier(name)} (ROW_GROUP_SIZE {LIVE_ROW_GROUP_SIZE})")
            conn.execute(f"USE {_identifier(name)}")
            conn.execute("SET max_vacuum_tasks = 0")
        except BaseException:
            conn.close()
            raise
        return conn
    except duckdb.IOException as error:
        if "lock" in str(error).lower():
            raise DatabaseLocked(_lock_message(path, error, snapshot)) from None
        raise
    except duckdb.ResourceInUseException:
        # An attached file can be open once per process; DuckDB's message names neither cause nor remedy.
        raise DatabaseLocked(
            f"The database {path} is already open in this process. Use that Store, or close it before opening "
            "the file again." + (f" The read-only snapshot can be opened alongside it: {snapshot}" if snapshot else "")
        ) from None


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Store:
    """A handle on the atlas database. Write methods live in sibling modules and take a Store."""

    def __init__(self, conn: duckdb.DuckDBPyConnection, path: Path, *, read_only: bool = False):
        self.conn = conn
        self.path = path
        self.read_only = read_only

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False, snapshot: Path | None = None, migrate: bool = True) -> "Store":
        conn = connect(path, read_only=read_only, snapshot=snapshot)
        store = cls(conn, Path(path), read_only=read_only)
        if migrate and not read_only:
            store.migrate()
        return store

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction: everything inside is committed together or not at all."""
        self.conn.execute("BEGIN TRANSACTION")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def applied_migrations(self) -> set[int]:
        exists = self.conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations'"
        ).fetchone()[0]
        if not exists:
            return set()
        return {row[0] for row in self.conn.execute("SELECT version FROM schema_migrations").fetchall()}

    def migrate(self, migrations: list[Migration] | None = None) -> list[str]:
        """Apply pending migrations in order, each in its own transaction."""
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = self.applied_migrations()
        applied = []
        for migration in migrations if migrations is not None else bundled_migrations():
            if migration.version in done:
                continue
            with self.transaction() as conn:
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [migration.version, migration.name]
                )
            applied.append(f"{migration.version:03d}_{migration.name}")
        return applied

    def publish_snapshot(self, target: Path) -> Path:
        """Copy the whole database to ``target`` by write-then-rename.

        Readers of ``target`` see either the previous snapshot or the new one,
        never a half-written file.
        """
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        source = self.conn.execute("SELECT current_database()").fetchone()[0]
        self.conn.execute(f"ATTACH '{_sql_path(tmp)}' AS atlas_snapshot_tmp")
        try:
            self.conn.execute(f'COPY FROM DATABASE "{source}" TO atlas_snapshot_tmp')
        finally:
            self.conn.execute("DETACH atlas_snapshot_tmp")
        os.replace(tmp, target)
        return target


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


@contextmanager
def registered(conn: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[str]:
    """An Arrow table visible to SQL as ``name`` for the duration of the block."""
    conn.register(name, table)
    try:
        yield name
    finally:
        conn.unregister(name)


def append_arrow(conn: duckdb.DuckDBPyConnection, table_name: str, table: pa.Table, stamps: dict[str, Any]) -> int:
    """Append every row of ``table`` to ``table_name`` by column name, plus constant ``stamps`` (run_id, times)."""
    columns = ", ".join(f'"{n}"' for n in table.schema.names)
    stamp_columns = "".join(f', "{name}"' for name in stamps)
    placeholders = ", ?" * len(stamps)
    with registered(conn, f"incoming_{table_name}", table) as view:
        conn.execute(
            f"INSERT INTO {table_name} ({columns}{stamp_columns}) SELECT {columns}{placeholders} FROM {view}",
            list(stamps.values()),
        ).fetchall()
    return table.num_rows
