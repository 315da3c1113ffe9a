"""Test-wide settings: Prefect's ephemeral engine with telemetry off and a private home."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Set before anything imports prefect: its settings are read when the module loads.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="atlas-prefect-home-"))
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")
for _name in [n for n in os.environ if n.startswith("ATLAS_")]:
    del os.environ[_name]

import pytest  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def sample_corpus() -> Path:
    return REPO / "data" / "sample" / "pubmed"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Prefect stops its ephemeral engine at interpreter exit and logs to pytest's already closed
    capture stream; without this the run ends with a 'Logging error' traceback after the summary."""
    import logging

    logging.raiseExceptions = False
