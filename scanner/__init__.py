"""Criteria and PEM scanner: extract policy-free facts from a paper's text, then decide under a policy.

Public entry points: ``scanner.pipeline.scan_pending`` / ``reclassify_all`` (stored papers),
``scanner.policy.load_policy``, ``scanner.contract.classify_file`` (offline JSONL contract)
and ``scanner.cli.register`` (commands).
"""

from scanner.extract import SCANNER_VERSION

__all__ = ["SCANNER_VERSION"]
