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
    for key, value in counts.items():
        if isinstance(value, dict) and key != "versions":
            lines += ["", f"## {key}", "", "| measure | value |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in value.items()]
    return "\n".join(lines) + "\n"
