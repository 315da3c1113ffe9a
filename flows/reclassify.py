"""Re-label the whole corpus under a criteria policy, from stored facts (no text, no LLM).

    atlas reclassify --policy policies/v0.2.yaml
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from atlas.config import settings_for_database
from atlas.store import Store
from atlas.store.runs import finish_run, start_run
from flows.publish import publish_task
from scanner.extract import SCANNER_VERSION
from scanner.pipeline import reclassify_all
from scanner.policy import Policy, load_policy


@task(name="reclassify-all", cache_policy=NO_CACHE)
def reclassify_task(store: Store, policy: Policy, run_id: str) -> dict[str, Any]:
    return reclassify_all(store, policy, run_id=run_id)


def reclassify_markdown(counts: dict[str, Any], policy: Policy, run_id: str) -> str:
    lines = [f"# Reclassify under policy v{policy.version}", "",
             f"- run: `{run_id}`", f"- policy: `{policy.source}` (sha256 `{policy.hash[:16]}`)",
             f"- scanner: v{SCANNER_VERSION}", "", "| measure | value |", "|---|---|"]
    for key, value in counts.items():
        if key in {"policy_hash", "policy_version"}:
            continue
        shown = ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else value
        lines.append(f"| {key} | {shown} |")
    return "\n".join(lines) + "\n"


@flow(name="reclassify")
def reclassify(policy_path: str, db_path: str | None = None,
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Open the store, load the policy, re-decide every current extraction, record the run, publish."""
    logger = get_run_logger()
    policy = load_policy(policy_path)
    settings = settings_for_database(db_path, overrides)
    with Store.open(settings.database, snapshot=settings.snapshot) as store:
        run_id = start_run(store, "reclassify", parameters={"policy_path": policy_path},
                           versions={"scanner": SCANNER_VERSION, "policy": policy.version,
                                     "policy_hash": policy.hash})
        try:
            counts = reclassify_task(store, policy, run_id)
        except BaseException as error:
            finish_run(store, run_id, status="failed", error=f"{type(error).__name__}: {error}")
            raise
        finish_run(store, run_id, status="completed", counts=counts)
        counts["publish"] = publish_task(store, settings)
    create_markdown_artifact(key="reclassify-summary", markdown=reclassify_markdown(counts, policy, run_id),
                             description=f"reclassify run {run_id}")
    logger.info("reclassify %s under policy v%s: %s", run_id, policy.version, counts)
    return {**counts, "run_id": run_id}
