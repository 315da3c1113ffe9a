"""Plain-language summaries: grounded in the paper, checked, and versioned."""

from generator.version import GENERATOR_VERSION

__all__ = ["GENERATOR_VERSION"]
