"""Open-access full text: fetch the PMC JATS, keep only the methods section, store it.

The methods usually say which definition governed inclusion when the abstract
does not. Fetching goes through the one E-utilities client (and its shared rate
limiter). Whether an article is open access shows only in the document PMC
returns, so it is fetched and its permissions read: one whose licence says it
is not open access keeps no methods text (its fetch is recorded, with no
methods). A paper whose full text cannot be had is a ``paper_failures`` row
with stage ``fulltext``; its scan goes on with title and abstract.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from atlas.store import Store
from atlas.store.scans import fulltext_pmids, insert_fulltexts, record_failures


def fetch_fulltexts(store: Store, client: Any, papers: Sequence[dict[str, Any]], *, run_id: str | None
                    ) -> dict[str, int]:
    """Fetch and store methods for papers with a PMCID and no stored full text yet.

    ``client`` is an ``atlas.pubmed.client.EutilsClient`` (anything with ``efetch_pmc(pmcid) -> bytes``).
    """
    from atlas.pubmed.jats import extract_methods, is_open_access

    wanted = [p for p in papers if p.get("pmcid")]
    have = fulltext_pmids(store, [p["pmid"] for p in wanted])
    rows: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    closed = 0
    for paper in wanted:
        if paper["pmid"] in have:
            continue
        try:
            xml = client.efetch_pmc(paper["pmcid"])
            if is_open_access(xml) is False:  # the licence says it is not open access: its text is not used
                closed += 1
                methods = None
            else:
                methods = extract_methods(xml)
        except Exception as error:  # one paper's full text never stops the scan
            failures.append({"pmid": paper["pmid"], "stage": "fulltext",
                             "error": f"{type(error).__name__}: {error}"[:2000], "raw": paper["pmcid"]})
            continue
        rows.append({"pmid": paper["pmid"], "pmcid": paper["pmcid"], "methods": methods or None,
                     "content_hash": hashlib.sha256(xml).hexdigest()})
    insert_fulltexts(store, rows, run_id=run_id)
    record_failures(store, failures, run_id=run_id)
    return {"fulltext_fetched": len(rows), "fulltext_with_methods": sum(1 for r in rows if r["methods"]),
            "fulltext_failed": len(failures), "fulltext_not_open_access": closed}
