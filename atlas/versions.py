"""The versions every output is tagged with, gathered in one place."""

from __future__ import annotations

from atlas import __version__
from atlas.config import Settings


def current_versions(settings: Settings) -> dict[str, str]:
    """Versions of the code and policy a run uses (scanner and generator join when present)."""
    return {"atlas": __version__}
