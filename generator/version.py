"""The generator's version, stored on every summary.

Bump ``GENERATOR_VERSION`` whenever the prompt, the output schema or the
extractive summariser changes in a way that should regenerate stored summaries.
"""

GENERATOR_VERSION = "1"
