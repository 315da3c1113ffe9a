"""Read one large PubMed XML file on several cores.

Reading a record is CPU work in libxml2 and Python, so one process reads a
baseline-sized file at the speed of one core. Here the calling process cuts
the records out (``_Slicer``, a byte scan) and hands them in chunks to helper
processes, which parse and read them exactly as the serial reader does and
send back plain tuples (they pickle many times faster than the slotted
dataclasses); whenever every helper has enough work the caller reads the next
chunk itself, so ``workers`` processes share the work, the caller among them
(on two cores, 7-9% faster than two helpers beside a caller that only cut
records out and unpickled results). The caller rebuilds the records
in input order and keeps each record's own bytes as its ``raw_xml``, so the
results equal the serial reader's, field for field. From a plain regular file
the helpers read each record's bytes themselves (the pipe carries only
offsets, and writing the bytes through it cost the caller more than cutting
them out); they check the file is still the same one (device, inode, size,
mtime) before every chunk. Gzip input and other streams send the bytes.

A record that is not well-formed on its own hands the rest of the document,
from that record on, to the tree reader, as in the serial reader. Helpers are
started with ``spawn`` (safe beside the threads Prefect and httpx run) and are
shut down when the iteration ends, fails or is abandoned; as with any spawned
pool, a script that uses this must keep its own work under
``if __name__ == "__main__":``. Linux only (pipe sizes are set with fcntl).
"""

from __future__ import annotations

import fcntl
import io
import multiprocessing
import operator
import os
import pickle
import stat
from collections.abc import Iterator
from dataclasses import fields
from multiprocessing.connection import Connection, wait
from typing import IO, NamedTuple

from atlas.errors import ParseError
from atlas.models import AbstractSection, Author, BadRecord, Deletion, Paper
from atlas.pubmed.parse import Record, SegmentReader, _iter_tree, _Slicer

# Records per hand-off: enough that the system calls and the pickling per hand-off do not show, few enough
# (~0.4 MB of today's records) that a second chunk waits whole in a worker's 1 MB pipe.
CHUNK_RECORDS = 32

# Paper as a tuple of its fields, raw_xml left out: the caller already holds those bytes.
_PAPER_FIELDS = tuple(f.name for f in fields(Paper) if f.name != "raw_xml")
_RAW_XML_AT = [f.name for f in fields(Paper)].index("raw_xml")
_AUTHORS_AT = _PAPER_FIELDS.index("authors")
_SECTIONS_AT = _PAPER_FIELDS.index("abstract_sections")
_paper_values = operator.attrgetter(*_PAPER_FIELDS)
_author_values = operator.attrgetter(*(f.name for f in fields(Author)))
_section_values = operator.attrgetter(*(f.name for f in fields(AbstractSection)))

Encoded = tuple  # ("P", paper values) | ("B", pmid, error) | ("D", pmid, version)
Item = tuple[bytes, bytes]  # (record tag, record bytes) as _Slicer yields them


def iter_segments_parallel(stream: IO[bytes], workers: int, chunk_records: int = CHUNK_RECORDS) -> Iterator[Record]:
    """The records of ``stream`` in order, read by ``workers`` processes (this one and ``workers - 1`` helpers).

    This process cuts the records out, keeps every helper supplied and reads
    a chunk itself whenever they all have enough, so no core waits while
    there is work and no records are pickled that one process can read.
    Only this thread talks to the helpers, so nothing waits on the GIL to
    move data. A helper holds a second chunk only while it fits in its pipe,
    so a send never blocks on a helper that is itself blocked sending a result.
    libxml2 errors propagate as in serial.
    """
    slicer = _Slicer(stream)
    items = iter(slicer)
    source = _regular_file(stream)
    pool = _WorkerPool(workers - 1, source)
    reader = SegmentReader()
    try:
        chunks: dict[int, list[Item]] = {}  # handed out or read here, not yet yielded
        done: dict[int, tuple[bool, list]] = {}  # chunk id -> (read here?, results)
        cut = emit = 0  # the next chunk to hand out, the next chunk to yield
        rest = None  # the tree reader's stream, once the slicer stops
        exhausted = False
        pending: tuple[list[Item], bytes] | None = None  # cut, not yet handed out
        while True:
            for chunk_id, results in pool.receive_ready(block=False):  # frees the helpers that are done
                done[chunk_id] = False, results
            while pending is not None or not exhausted:
                if pending is None:
                    chunk, offsets, rest = _cut(items, chunk_records, slicer)
                    exhausted = rest is not None or len(chunk) < chunk_records
                    if not chunk:
                        break
                    if source is None:  # no file the helpers can read: the pipe carries the bytes
                        message = chunk
                    else:  # the helpers read them from the file: the pipe carries only where they are
                        message = [(tag, source.start + at, len(segment)) for (tag, segment), at in zip(chunk, offsets)]
                    pending = chunk, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
                worker = pool.free_worker(len(pending[1]))
                if worker is None:
                    break
                pool.send(worker, cut, pending[1])
                chunks[cut] = pending[0]
                cut += 1
                pending = None
            if emit in done:
                here, results = done.pop(emit)
                chunk = chunks.pop(emit)
                for index, records in enumerate(results):
                    if records is None:  # not well-formed alone: the tree reader reads on from this record
                        unread = [segment for _, segment in chunk[index:]]
                        for later in range(emit + 1, cut):
                            unread.extend(segment for _, segment in chunks[later])
                        if pending is not None:
                            unread.extend(segment for _, segment in pending[0])
                        yield from _iter_tree(slicer.rest_from(unread))
                        return
                    if here:
                        yield from records
                    else:
                        segment = chunk[index][1]
                        for record in records:
                            yield _decode(record, segment)
                emit += 1
                continue
            if pending is not None and (cut - emit <= _AHEAD_LIMIT or not pool.busy()):  # the helpers have enough
                chunks[cut] = pending[0]
                done[cut] = True, _read_items_here(reader, pending[0])
                cut += 1
                pending = None
                continue
            if not pool.busy():
                break
            for chunk_id, results in pool.receive_ready():
                done[chunk_id] = False, results
        if rest is not None:
            yield from _iter_tree(rest)
    finally:
        pool.close()


# Chunks cut and not yet yielded at most, before this process stops reading chunks itself and waits for a helper:
# bounds the records held while a helper is slow on one chunk.
_AHEAD_LIMIT = 4


def _read_items_here(reader: SegmentReader, items: list[Item]) -> list[list[Record] | None]:
    """Each record read as the serial reader reads it; None at the first one not well-formed alone."""
    results: list[list[Record] | None] = []
    for tag, segment in items:
        records = reader.read(tag, segment)
        results.append(records)
        if records is None:
            break
    return results


def _cut(items: Iterator, count: int, slicer: _Slicer) -> tuple[list[Item], list[int], IO[bytes] | None]:
    """Up to ``count`` records from the slicer with their offsets, and its stream for the tree reader if it stopped."""
    chunk: list[Item] = []
    offsets: list[int] = []
    for item in items:
        if not isinstance(item, tuple):
            return chunk, offsets, item
        chunk.append(item)
        offsets.append(slicer.offset)
        if len(chunk) == count:
            break
    return chunk, offsets, None


class _File(NamedTuple):
    """A regular file the workers may read records from, and what it was when reading began."""

    path: str
    start: int  # the stream's position when slicing began
    identity: tuple[int, int, int, int]  # device, inode, size, mtime: a change means another file


def _identity(status: os.stat_result) -> tuple[int, int, int, int]:
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _regular_file(stream: IO[bytes]) -> _File | None:
    """The file behind ``stream`` if it is a plain (not gzip) regular file the workers can open by name."""
    if type(stream) is not io.BufferedReader or not isinstance(getattr(stream, "name", None), str):
        return None
    try:
        status = os.fstat(stream.fileno())
        start = stream.tell()
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return _File(os.path.abspath(stream.name), start, _identity(status))


_PIPE_BYTES = 1 << 20  # Linux lets any process grow a pipe to 1 MB (fs.pipe-max-size)
_DEFAULT_PIPE_BYTES = 1 << 16
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _grow_pipe(conn: Connection) -> int:
    """Ask for a 1 MB pipe buffer; the capacity actually granted (64 kB where the system refuses)."""
    try:
        return fcntl.fcntl(conn.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
    except OSError:
        return _DEFAULT_PIPE_BYTES


class _WorkerPool:
    """Worker processes with a pipe each way; started with ``spawn`` and always stopped by ``close``."""

    def __init__(self, workers: int, source: _File | None):
        context = multiprocessing.get_context("spawn")
        self._inboxes: list[Connection] = []  # results, worker to us
        self._outboxes: list[Connection] = []  # chunks, us to worker
        self._capacity: list[int] = []
        self._in_flight: list[list[int]] = []
        self._processes = []
        try:
            for _ in range(workers):
                inbox, their_outbox = context.Pipe(duplex=False)
                their_inbox, outbox = context.Pipe(duplex=False)
                _grow_pipe(inbox)
                self._capacity.append(_grow_pipe(outbox))
                process = context.Process(target=_worker_main, args=(their_inbox, their_outbox, source), daemon=True,
                                          name="atlas-parse-worker")
                process.start()
                their_inbox.close()
                their_outbox.close()
                self._inboxes.append(inbox)
                self._outboxes.append(outbox)
                self._in_flight.append([])
                self._processes.append(process)
        except BaseException:
            self.close()
            raise

    def free_worker(self, size: int) -> int | None:
        """A worker that can take a message of ``size`` bytes now without this process blocking on it."""
        for index, chunks in enumerate(self._in_flight):
            if not chunks:
                return index
        for index, chunks in enumerate(self._in_flight):
            if len(chunks) == 1 and size + 64 <= self._capacity[index]:
                return index  # it is busy with one chunk: the message waits whole in its pipe
        return None

    def send(self, worker: int, chunk_id: int, message: bytes) -> None:
        try:
            self._outboxes[worker].send_bytes(message)
        except OSError as exc:  # the worker's end of the pipe is gone
            raise self._stopped() from exc
        self._in_flight[worker].append(chunk_id)

    def _stopped(self) -> RuntimeError:
        codes = [process.exitcode for process in self._processes]
        return RuntimeError(f"a parse worker stopped unexpectedly (exit codes {codes})")

    def busy(self) -> bool:
        return any(self._in_flight)

    def receive_ready(self, block: bool = True) -> Iterator[tuple[int, list]]:
        """(chunk id, results) for every worker that has one; waits for the first unless ``block`` is false."""
        waiting = {self._inboxes[i]: i for i, chunks in enumerate(self._in_flight) if chunks}
        if not waiting:
            return
        for conn in wait(list(waiting), timeout=None if block else 0):
            worker = waiting[conn]
            try:
                status, payload = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError) as exc:
                raise self._stopped() from exc
            if status == "input":
                raise ParseError(payload)
            if status != "ok":
                raise RuntimeError(f"a parse worker failed: {payload}")
            yield self._in_flight[worker].pop(0), payload

    def close(self) -> None:
        for conn in (*self._inboxes, *self._outboxes):
            conn.close()
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            process.join()


def _worker_main(inbox: Connection, outbox: Connection, source: _File | None) -> None:
    """Read chunks until the pipe closes; any failure is sent back as text rather than lost with the process."""
    descriptor = None
    reader = SegmentReader()
    try:
        while True:
            try:
                message = inbox.recv_bytes()
            except (EOFError, OSError):
                return
            try:
                items = pickle.loads(message)
                if source is not None:
                    if descriptor is None:
                        descriptor = os.open(source.path, os.O_RDONLY)
                    items = _read_items(descriptor, source, items)
                reply = ("ok", _read_chunk_encoded(reader, items))
            except _InputChanged as exc:
                reply = ("input", str(exc))
            except Exception as exc:  # reported to the caller, which raises it
                reply = ("error", f"{type(exc).__name__}: {exc}")
            try:
                outbox.send_bytes(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:
                return
    finally:
        if descriptor is not None:
            os.close(descriptor)


class _InputChanged(Exception):
    """The file is no longer the one the caller is reading: the caller raises ParseError."""


def _read_items(descriptor: int, source: _File, places: list[tuple[bytes, int, int]]) -> list[Item]:
    """The records at ``places`` in the file, which must still be the file the caller is reading."""
    if _identity(os.fstat(descriptor)) != source.identity:
        raise _InputChanged(f"{source.path} changed while it was being read")
    items = []
    for tag, offset, length in places:
        segment = os.pread(descriptor, length, offset)
        if len(segment) != length:
            raise _InputChanged(f"{source.path} changed while it was being read")
        items.append((tag, segment))
    return items


def _read_chunk_encoded(reader: SegmentReader, items: list[Item]) -> list[list[Encoded] | None]:
    """Helper side: ``_read_items_here``, each record encoded for the pipe."""
    return [None if records is None else [_encode(record) for record in records]
            for records in _read_items_here(reader, items)]


def _encode(record: Record) -> Encoded:
    if type(record) is Paper:
        values = list(_paper_values(record))
        values[_AUTHORS_AT] = [_author_values(author) for author in record.authors]
        values[_SECTIONS_AT] = [_section_values(section) for section in record.abstract_sections]
        return ("P", values)
    if type(record) is BadRecord:
        return ("B", record.pmid, record.error)
    return ("D", record.pmid, record.version)


def _decode(encoded: Encoded, segment: bytes) -> Record:
    kind = encoded[0]
    if kind == "P":
        values = encoded[1]
        values[_AUTHORS_AT] = [Author(*author) for author in values[_AUTHORS_AT]]
        values[_SECTIONS_AT] = [AbstractSection(*section) for section in values[_SECTIONS_AT]]
        values.insert(_RAW_XML_AT, segment)
        return Paper(*values)
    if kind == "B":
        return BadRecord(pmid=encoded[1], error=encoded[2], raw_xml=segment)
    return Deletion(pmid=encoded[1], version=encoded[2])
