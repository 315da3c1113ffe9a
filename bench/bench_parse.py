"""Benchmark the streaming PubMed parser: records per second and peak memory.

Builds one large PubmedArticleSet in a temporary directory by replicating the
real fixture records (articles and the book chapter) with distinct PMIDs, then
parses it in a fresh subprocess so that the memory baseline is clean. Prints
records/s (wall and CPU) and peak RSS (VmHWM), plus the growth of peak RSS
over the interpreter's footprint after imports.

Two mixes, both real NCBI records: ``modern`` is the efetch and baseline
fixtures as PubMed serves them today (11.5 kB a record on average, most with
reference lists): the closest stand-in here for what the nightly efetch
returns. ``all`` adds the 604 citations of a 2016 MEDLINE update file (no
PubmedData, no references; 7 kB a record on average), as a baseline or update
file import meets them. Records are never trimmed to make them cheaper.

Each file is read twice, back to back: by one process, then with
``iter_records(workers=2)`` (the calling process cuts records out and shares
the reading with one helper process); the speed-up printed is measured in that
one run, since this host's speed drifts between runs.

    .venv/bin/python bench/bench_parse.py [--records 30000] [--gzip] [--workers 2]

Targets: >= 8,000 records/s; peak RSS < 100 MB (with helpers, all processes together).
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "pubmed"
TARGET_RATE = 8_000
TARGET_RSS_MB = 100


def _template_records(mix: str) -> list[str]:
    """Real fixture records as PubmedArticle text with a {PMID} slot.

    ``modern``: every PubmedArticle / PubmedBookArticle of the efetch and
    baseline fixtures (70 records, many with long reference lists).
    ``all``: those plus the 604 citations of the legacy MEDLINE update file,
    each wrapped in a PubmedArticle as the current format carries them.
    """
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    templates: list[str] = []
    for path in sorted(FIXTURES.iterdir()):
        legacy = path.name.startswith("medline16")
        if legacy and mix != "all":
            continue
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        root = etree.fromstring(data, parser)
        for record in root:
            if legacy and record.tag == "MedlineCitation":
                wrapper = etree.Element("PubmedArticle")
                wrapper.append(record.__copy__())
                record = wrapper
            if record.tag not in ("PubmedArticle", "PubmedBookArticle"):
                continue
            pmid = record.find("MedlineCitation/PMID")
            if pmid is None:
                pmid = record.find("BookDocument/PMID")
            pmid.text = "{PMID}"
            text = etree.tostring(record, encoding="unicode", with_tail=False)
            templates.append(text.replace("{", "{{").replace("}", "}}").replace("{{PMID}}", "{PMID}"))
    return templates


def build_file(directory: Path, count: int, compress: bool, mix: str = "modern") -> tuple[Path, int]:
    templates = _template_records(mix)
    path = directory / ("bench_pubmed.xml.gz" if compress else "bench_pubmed.xml")
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\n<PubmedArticleSet>\n')
        for index in range(count):
            out.write(templates[index % len(templates)].format(PMID=50_000_000 + index))
            out.write("\n")
        out.write("<DeleteCitation><PMID Version=\"1\">49999999</PMID></DeleteCitation>\n</PubmedArticleSet>\n")
    return path, len(templates)


_CHILD = r"""
import json, resource, sys, time

def status(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")

from atlas.models import Paper, Deletion, BadRecord
from atlas.pubmed.parse import iter_records

baseline_rss = status("VmRSS")
baseline_hwm = status("VmHWM")
counts = {"Paper": 0, "Deletion": 0, "BadRecord": 0}
abstract_chars = 0
wall0, cpu0 = time.perf_counter(), time.process_time()
workers = int(sys.argv[2])
for record in iter_records(sys.argv[1], workers=workers):
    counts[type(record).__name__] += 1
    if type(record) is Paper and record.abstract:
        abstract_chars += len(record.abstract)
wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
peak = status("VmHWM")
worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest finished helper
if workers > 1:  # the floors below are single-process figures, measured in the workers == 1 run
    print(json.dumps({
        "counts": counts, "wall_s": wall, "cpu_s": cpu, "abstract_chars": abstract_chars,
        "baseline_rss_mb": baseline_rss, "baseline_hwm_mb": baseline_hwm, "peak_rss_mb": peak,
        "worker_peak_rss_mb": worker_peak,
    }))
    raise SystemExit(0)

# Floors for comparison. 1: libxml2 iterparse of the whole file as one streamed tree (records cleared,
# nothing read). 2: what iter_records does before reading any field: cut each record out and parse it.
from lxml import etree
import atlas.pubmed.parse as parse_module
from atlas.pubmed.parse import _WATCHED, _open_source, _xml_parser_kwargs
bare = 0
floor0 = time.perf_counter()
with _open_source(sys.argv[1]) as stream:
    for event, elem in etree.iterparse(stream, events=("end",), tag=_WATCHED, **_xml_parser_kwargs()):
        if elem.tag == "PubmedArticle":
            bare += 1
            elem.clear()
            while elem.getprevious() is not None:
                del elem.getparent()[0]
floor = time.perf_counter() - floor0
parse_module._read_record = lambda elem, reader, raw: None  # no fields, no hash
sliced = 0
floor0 = time.perf_counter()
for record in iter_records(sys.argv[1]):
    sliced += record is None
slice_floor = time.perf_counter() - floor0
print(json.dumps({
    "counts": counts, "wall_s": wall, "cpu_s": cpu, "abstract_chars": abstract_chars,
    "baseline_rss_mb": baseline_rss, "baseline_hwm_mb": baseline_hwm,
    "peak_rss_mb": peak,
    "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "floor_rate": bare / floor, "slice_floor_rate": sliced / slice_floor,
}))
"""


def _run_child(path: Path, workers: int) -> dict | None:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(workers)], cwd=REPO, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return None
    return json.loads(proc.stdout)


def run_mix(mix: str, count: int, compress: bool, workers: int) -> bool:
    """One file, read by one process and then by ``workers`` processes (this one and helpers), back to back."""
    with tempfile.TemporaryDirectory(prefix="atlas-bench-parse-") as tmp:
        started = time.perf_counter()
        path, distinct = build_file(Path(tmp), count, compress, mix)
        size_mb = path.stat().st_size / 1e6
        print(f"[{mix}] generated {count:,} records from {distinct} distinct fixture records "
              f"into {path.name} ({size_mb:.1f} MB, {size_mb * 1e3 / count:.1f} kB/record) "
              f"in {time.perf_counter() - started:.1f}s")
        single = _run_child(path, 1)
        multi = _run_child(path, workers) if single is not None and workers > 1 else None
        if single is None or (workers > 1 and multi is None):
            return False

    rates = {}
    for label, result in (("1 process", single), (f"{workers} processes", multi)):
        if result is None:
            continue
        parsed = result["counts"]["Paper"]
        rate_wall = rates[label] = parsed / result["wall_s"]
        growth = result["peak_rss_mb"] - result["baseline_rss_mb"]
        print(f"[{mix}] {label}: records {result['counts']}")
        print(f"[{mix}] {label}: {result['wall_s']:.2f}s wall, {result['cpu_s']:.2f}s CPU in the reading process; "
              f"{rate_wall:,.0f} records/s wall ({size_mb / result['wall_s']:.1f} MB/s of input file)")
        if "worker_peak_rss_mb" in result:
            worker = result["worker_peak_rss_mb"]
            total = result["peak_rss_mb"] + (workers - 1) * worker
            print(f"[{mix}] {label}: memory: peak RSS {result['peak_rss_mb']:.1f} MB in the reading process "
                  f"(growth {growth:.1f} MB), {worker:.1f} MB in the largest helper; "
                  f"all processes together at most {total:.1f} MB (shared pages counted once per process)")
            ok_rss = total < TARGET_RSS_MB
        else:
            print(f"[{mix}] {label}: floors: libxml2 iterparse of the file as one tree "
                  f"{result['floor_rate']:,.0f} records/s; records cut out and parsed one by one, "
                  f"no fields, no hash {result['slice_floor_rate']:,.0f} records/s")
            print(f"[{mix}] {label}: memory: peak RSS {result['peak_rss_mb']:.1f} MB (VmHWM), interpreter "
                  f"after imports {result['baseline_rss_mb']:.1f} MB, growth {growth:.1f} MB")
            ok_rss = result["peak_rss_mb"] < TARGET_RSS_MB
        print(f"[{mix}] {label}: target >= {TARGET_RATE:,} records/s: "
              f"{'met' if rate_wall >= TARGET_RATE else 'NOT met'}; "
              f"memory < {TARGET_RSS_MB} MB: {'met' if ok_rss else 'NOT met'}")
    if len(rates) == 2:
        first, second = rates.values()
        print(f"[{mix}] speed-up with {workers} processes, measured in this run: {second / first:.2f}x")
    return True


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--records", type=int, default=30_000)
    args.add_argument("--gzip", action="store_true", help="compress the generated file (tests the .gz path)")
    args.add_argument("--mix", choices=("modern", "all", "both"), default="both",
                      help="which real records to replicate (see _template_records)")
    args.add_argument("--workers", type=int, default=2,
                      help="processes (the reader and its helpers) for the second read of each file (1 skips it)")
    opts = args.parse_args(argv)
    mixes = ("modern", "all") if opts.mix == "both" else (opts.mix,)
    ok = all(run_mix(mix, opts.records, opts.gzip, opts.workers) for mix in mixes)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
