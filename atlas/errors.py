"""Errors that name the problem.

The split matters for retries: a ``ServiceError`` is transient and worth
retrying; everything else is bad input or a local condition and is not.
"""

from __future__ import annotations


class AtlasError(Exception):
    """Base class for every error the atlas raises on purpose."""


class ConfigError(AtlasError):
    """A setting is missing or malformed."""


class ServiceError(AtlasError):
    """A remote service (NCBI, an LLM endpoint) failed: never an empty result.

    ``transient`` failures (a 429/5xx, a timeout, a dropped connection, a body
    cut short) are retried with backoff. The others are answers the service
    gave on purpose (an HTML error page, an in-band ``<ERROR>``, a JSON error
    body, the wrong document) and are raised at once: asking again gets the
    same answer, and the nightly window is retried on the next run anyway.
    """

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 transient: bool = True):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.transient = transient


class RateLimited(ServiceError):
    """The service answered 429."""


class BadRequest(AtlasError):
    """The service rejected the request itself (4xx other than 429): not retried."""


class RecordError(AtlasError):
    """One record could not be read; the rest of its batch goes on."""

    def __init__(self, message: str, *, pmid: str | None = None):
        super().__init__(message)
        self.pmid = pmid


class ParseError(AtlasError):
    """A document is not the XML we expect (truncated, not XML, wrong root)."""


class DatabaseLocked(AtlasError):
    """Another process holds the live database's write lock."""


class PolicyError(AtlasError):
    """A policy document is invalid; the message names the field and line."""


class InputError(AtlasError):
    """A line of user input (JSONL contract files) is invalid; names the line."""
