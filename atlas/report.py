"""Markdown run reports for Prefect artifacts: counts, failures, cost, versions."""

from __future__ import annotations

from typing import Any


def run_markdown(flow_name: str, counts: dict[str, Any]) -> str:
    lines = [f"# {flow_name} run `{counts.get('run_id', '?')}`: {counts.get('status', '?')}", ""]
    versions = counts.get("versions") or {}
    if versions:
        lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
        lines.append("")
    lines += ["| measure | value |", "|---|---|"]
    for key, value in counts.items():
        if key in {"run_id", "status", "versions", "new_pmids"} or isinstance(value, (dict, list)):
            continue
        lines.append(f"| {key} | {value} |")
    failures = counts.get("failures") or []
    lines += ["", f"## Failures ({len(failures)} shown)", ""]
    if failures:
        lines += ["| stage | PMID | error |", "|---|---|---|"]
        lines += [f"| {f['stage']} | {f['pmid'] or '-'} | {_cell(f['error'])} |" for f in failures]
    else:
        lines.append("None.")
    for key, value in counts.items():
        if isinstance(value, dict) and key != "versions":
            lines += ["", f"## {key}", "", "| measure | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in value.items()]
    return "\n".join(lines) + "\n"


def _cell(text: str, limit: int = 200) -> str:
    """One table cell: no pipes or newlines, and short."""
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
