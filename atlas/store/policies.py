"""Record the policy documents that decisions were made under, so the evidence view can show badge wording."""

from __future__ import annotations

import json
from typing import Any

from atlas.store.db import Store
from atlas.store.runs import utcnow


def record_policy(store: Store, *, policy_hash: str, version: str, badges: dict[str, Any],
                  criteria_names: dict[str, str], document: dict[str, Any]) -> bool:
    """Store a policy once per hash; returns True when it was new."""
    known = store.conn.execute("SELECT count(*) FROM policy_documents WHERE policy_hash = ?", [policy_hash]).fetchall()[0][0]
    if known:
        return False
    store.conn.execute(
        "INSERT INTO policy_documents (policy_hash, policy_version, badges, criteria_names, document, recorded_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [policy_hash, version, json.dumps(badges), json.dumps(criteria_names), json.dumps(document, default=str),
         utcnow()],
    ).fetchall()  # consume the result: DuckDB 2 refuses new work on a connection with one pending
    return True
