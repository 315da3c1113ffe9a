"""The versions a run is tagged with, gathered where every package may be imported."""

from __future__ import annotations

from atlas import __version__
from generator.checks import CHECKS_VERSION
from generator.version import GENERATOR_VERSION
from scanner.extract import SCANNER_VERSION
from scanner.policy import Policy


def current_versions(policy: Policy | None = None) -> dict[str, str]:
    versions = {"atlas": __version__, "scanner": SCANNER_VERSION, "generator": GENERATOR_VERSION,
                "checks": CHECKS_VERSION}
    if policy is not None:
        versions.update(policy=policy.version, policy_hash=policy.hash[:12])
    return versions
