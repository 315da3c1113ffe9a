"""Static evidence pages for readers: one page per study and a filterable index."""

from atlas.pages.render import (
    EvidenceRow,
    RenderResult,
    evidence_row_from_dict,
    render_pages,
    sanitise_inline_markup,
    versions_line,
)

__all__ = [
    "EvidenceRow",
    "RenderResult",
    "evidence_row_from_dict",
    "render_pages",
    "sanitise_inline_markup",
    "versions_line",
]
