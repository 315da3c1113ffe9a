"""The one module that talks to an LLM endpoint, through the ``openai`` SDK.

Any OpenAI-compatible server works by ``base_url`` (OpenAI, vLLM, Ollama,
llama.cpp server). Requests ask for JSON-schema structured output; replies are
decoded and checked against the schema here, so callers get either valid data
or an ``LLMSchemaError`` holding the raw reply.

Retries are ours, not the SDK's (``max_retries=0``), so every attempt is seen
and logged once: 429, 5xx, 408/409, timeouts and connection errors are retried
with backoff (a server's Retry-After wins); other 4xx and schema failures are
not. Each client has its own concurrency semaphore and request/token per-minute
limiters. The API key is handed to the SDK and nowhere else: it is scrubbed
from every message, log line and call record this module produces.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import openai
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from atlas.config import Settings
from atlas.errors import AtlasError, BadRequest, ConfigError, RateLimited, ServiceError
from generator.json_schema import schema_errors, strict_schema

log = logging.getLogger(__name__)

# Local servers (vLLM, Ollama, llama.cpp) ignore the key, but the SDK insists on one and would
# otherwise read OPENAI_API_KEY from the environment.
PLACEHOLDER_KEY = "no-key-configured"

CallLog = Callable[[dict[str, Any]], None]

__all__ = [
    "CallLog",
    "LLMClient",
    "LLMResult",
    "LLMSchemaError",
    "LLMUnavailable",
    "RateLimiter",
    "cost_usd",
    "estimate_tokens",
    "strict_schema",
]


@dataclass(frozen=True, slots=True)
class LLMResult:
    """A schema-valid reply and what it cost."""

    data: dict[str, Any]
    raw: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    attempts: int = 1


class LLMSchemaError(AtlasError):
    """The endpoint answered, but not with JSON that fits the schema. Not retried; ``raw`` keeps the reply."""

    def __init__(self, message: str, *, raw: str, model: str, input_tokens: int = 0, output_tokens: int = 0,
                 cost_usd: float = 0.0, latency_s: float = 0.0, attempts: int = 1):
        super().__init__(message)
        self.raw = raw
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cost_usd = cost_usd
        self.latency_s = latency_s
        self.attempts = attempts


class LLMUnavailable(ServiceError):
    """The endpoint kept failing (429/5xx/timeouts) until the retries ran out."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 0, latency_s: float = 0.0):
        super().__init__(message, status=status)
        self.attempts = attempts
        self.latency_s = latency_s


def estimate_tokens(text: str) -> int:
    """A rough token count (four characters a token) for budgets and limiters, never for billing."""
    return math.ceil(len(text) / 4)


def cost_usd(prices: dict[str, dict[str, float]], model: str, input_tokens: int, output_tokens: int) -> float | None:
    """Cost from a price table in USD per million tokens; ``None`` when the model has no price."""
    price = prices.get(model) or prices.get("*")
    if not price:
        return None
    return (input_tokens * float(price.get("input", 0.0)) + output_tokens * float(price.get("output", 0.0))) / 1e6


class RateLimiter:
    """A token bucket: ``per_minute`` units a minute, bursts of up to ``burst_seconds`` worth.

    ``acquire(n)`` waits until the bucket is positive enough and then takes all
    ``n`` (the level may go below zero, so large requests are paced correctly
    rather than refused); ``adjust`` corrects an estimate once the real usage is known.
    """

    def __init__(self, per_minute: float, *, burst_seconds: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self._level = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._updated) * self.rate)
        self._updated = now

    def acquire(self, amount: float = 1.0) -> float:
        """Take ``amount`` units, waiting as needed; returns the seconds waited."""
        waited = 0.0
        need = min(amount, self.capacity)
        while True:
            with self._lock:
                self._refill()
                if self._level >= need:
                    self._level -= amount
                    return waited
                wait = (need - self._level) / self.rate
            self._sleep(wait)
            waited += wait

    def adjust(self, delta: float) -> None:
        """Take ``delta`` more units (or give them back when negative)."""
        with self._lock:
            self._refill()
            self._level = min(self.capacity, self._level - delta)


def _retry_after_seconds(headers: Any) -> float | None:
    """Seconds a server asked us to wait: ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


class LLMClient:
    """Structured-output chat completions against one OpenAI-compatible endpoint.

    ``call_log`` receives one dict per attempt (for the ``llm_calls`` table).
    ``backoff_base``/``backoff_max`` shape the exponential backoff between
    retries; ``max_retry_after`` caps how long a server's Retry-After may make us wait.
    """

    def __init__(self, settings: Settings, *, call_log: CallLog | None = None, backoff_base: float = 1.0,
                 backoff_max: float = 60.0, max_retry_after: float = 120.0, temperature: float | None = 0.0,
                 expected_output_tokens: int = 700, sleep: Callable[[float], None] = time.sleep):
        if not settings.llm_base_url:
            raise ConfigError("no LLM endpoint is configured (set ATLAS_LLM_BASE_URL)")
        self.model = settings.llm_model
        self.base_url = settings.llm_base_url
        self.prices = dict(settings.llm_prices)
        self.max_retries = settings.llm_max_retries
        self.timeout = settings.llm_timeout
        self.temperature = temperature
        self.expected_output_tokens = expected_output_tokens
        self.max_output_tokens = settings.llm_max_output_tokens
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self._call_log = call_log
        self._sleep = sleep
        secret = settings.llm_api_key.get_secret_value() if settings.llm_api_key else ""
        self._secret = secret
        self._sdk = openai.OpenAI(
            api_key=secret or PLACEHOLDER_KEY,
            base_url=settings.llm_base_url,
            timeout=settings.llm_timeout,
            max_retries=0,
        )
        self._slots = threading.BoundedSemaphore(settings.llm_concurrency)
        self._requests = RateLimiter(settings.llm_requests_per_minute, sleep=sleep) if settings.llm_requests_per_minute else None
        self._tokens = RateLimiter(settings.llm_tokens_per_minute, sleep=sleep) if settings.llm_tokens_per_minute else None
        self._jitter = random.Random(0x5EED)
        self._jitter_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LLMClient(model={self.model!r}, base_url={self.base_url!r})"

    def __enter__(self) -> "LLMClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sdk.close()

    # --- public -----------------------------------------------------------------------

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for a call at this client's model; 0.0 when the model has no price in the table."""
        return cost_usd(self.prices, self.model, input_tokens, output_tokens) or 0.0

    @property
    def priced(self) -> bool:
        return cost_usd(self.prices, self.model, 0, 0) is not None

    def complete_json(self, *, purpose: str, messages: list[dict[str, Any]], schema_name: str,
                      schema: dict[str, Any], pmid: str | None = None) -> LLMResult:
        """One structured-output completion, retried on transient failures.

        Raises ``LLMSchemaError`` (reply is not schema-valid JSON), ``LLMUnavailable``
        (a ``ServiceError``: still failing after the retries) or ``BadRequest``
        (the endpoint rejected the request).
        """
        attempts = 0
        spent = 0.0
        retrying = Retrying(
            stop=stop_after_attempt(self.max_retries + 1),
            retry=retry_if_exception_type(ServiceError),
            wait=self._wait,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    started = time.monotonic()
                    try:
                        result = self._attempt(purpose, messages, schema_name, schema, pmid, attempts)
                    finally:
                        spent += time.monotonic() - started
                    return result
        except ServiceError as error:
            raise LLMUnavailable(
                f"{purpose}: the LLM endpoint still failed after {attempts} attempt(s): {error}",
                status=error.status, attempts=attempts, latency_s=spent,
            ) from None
        except LLMSchemaError as error:
            error.attempts = attempts
            raise
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    # --- one attempt -------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.max_retry_after)
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (state.attempt_number - 1))
        with self._jitter_lock:
            return ceiling / 2 + self._jitter.uniform(0, ceiling / 2)

    def _redact(self, text: str | None) -> str:
        text = text or ""
        if self._secret and len(self._secret) >= 4:
            text = text.replace(self._secret, "[redacted]")
        return text

    def _record(self, **entry: Any) -> None:
        level = logging.INFO if entry["status"] == "ok" else logging.WARNING
        log.log(level, "llm %s pmid=%s model=%s attempt=%d status=%s http=%s latency=%.2fs tokens=%d/%d",
                entry["purpose"], entry["pmid"], entry["model"], entry["attempt"], entry["status"],
                entry.get("http_status"), entry["latency_s"], entry.get("input_tokens", 0), entry.get("output_tokens", 0))
        if self._call_log is not None:
            self._call_log(entry)

    def _attempt(self, purpose: str, messages: list[dict[str, Any]], schema_name: str, schema: dict[str, Any],
                 pmid: str | None, attempt_number: int) -> LLMResult:
        request_text = json.dumps(messages, ensure_ascii=False)
        estimate = estimate_tokens(request_text) + estimate_tokens(json.dumps(schema)) + self.expected_output_tokens
        if self._requests:
            self._requests.acquire(1)
        if self._tokens:
            self._tokens.acquire(estimate)
        entry: dict[str, Any] = {
            "call_id": uuid.uuid4().hex,
            "purpose": purpose,
            "pmid": pmid,
            "model": self.model,
            "attempt": attempt_number,
            "request": {"messages": messages, "schema_name": schema_name, "temperature": self.temperature},
            "started_at": datetime.now(timezone.utc),
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
            "http_status": None,
            "response_raw": None,
            "error": None,
        }
        extra: dict[str, Any] = {"max_completion_tokens": self.max_output_tokens}  # no reply costs more than this
        if self.temperature is not None:
            extra["temperature"] = self.temperature
        with self._slots:
            started = time.monotonic()
            try:
                response = self._sdk.chat.completions.with_raw_response.create(
                    model=self.model,
                    messages=messages,  # type: ignore[arg-type]
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": schema_name, "schema": schema, "strict": True},
                    },
                    **extra,
                )
                body = response.text
                completion = response.parse()
            except openai.APIStatusError as error:
                entry["latency_s"] = time.monotonic() - started
                self._fail(entry, error)
            except openai.APITimeoutError:
                entry["latency_s"] = time.monotonic() - started
                self._fail_transient(entry, f"no reply within {self.timeout:g}s")
            except openai.APIConnectionError as error:
                entry["latency_s"] = time.monotonic() - started
                self._fail_transient(entry, f"could not reach the endpoint ({type(error.__cause__ or error).__name__})")
            except (ValueError, openai.APIResponseValidationError) as error:
                entry["latency_s"] = time.monotonic() - started
                self._fail_transient(entry, f"the reply body is not a chat completion ({type(error).__name__})", http_status=200)
            latency = time.monotonic() - started
        entry["latency_s"] = latency
        entry["http_status"] = response.status_code
        entry["response_raw"] = self._redact(body)
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list):
            self._fail_transient(entry, "the reply body is not a chat completion (no choices)", http_status=response.status_code)
        usage = getattr(completion, "usage", None)
        input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = self.cost(input_tokens, output_tokens)
        entry.update(input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost)
        if self._tokens and (input_tokens or output_tokens):
            self._tokens.adjust(input_tokens + output_tokens - estimate)
        message = choices[0].message if choices else None
        content = getattr(message, "content", None)
        finish = getattr(choices[0], "finish_reason", None) if choices else None
        problem: str | None = None
        data: Any = None
        if content is None:
            refusal = getattr(message, "refusal", None)
            problem = f"the model returned no content (refusal: {refusal!r})" if refusal else "the model returned no content"
        else:
            try:
                data = json.loads(content)
            except json.JSONDecodeError as error:
                cut = " (cut off: finish_reason=length)" if finish == "length" else ""
                problem = f"the reply is not valid JSON{cut}: {error.msg} at character {error.pos}"
            else:
                errors = schema_errors(data, schema)
                if errors:
                    problem = "the reply does not fit the schema: " + "; ".join(errors)
        raw = content or ""
        if problem:
            entry.update(status="invalid", error=problem)
            self._record(**entry)
            raise LLMSchemaError(f"{purpose}: {problem}", raw=self._redact(raw), model=self.model,
                                 input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost, latency_s=latency)
        entry["status"] = "ok"
        self._record(**entry)
        return LLMResult(data=data, raw=raw, model=self.model, input_tokens=input_tokens, output_tokens=output_tokens,
                         cost_usd=cost, latency_s=latency, attempts=attempt_number)

    def _fail(self, entry: dict[str, Any], error: openai.APIStatusError) -> None:
        status = error.status_code
        detail = self._redact(_error_detail(error))
        entry.update(http_status=status, response_raw=self._redact(_safe_text(error.response)))
        if status == 429:
            retry_after = _retry_after_seconds(error.response.headers)
            entry.update(status="error", error=f"429 rate limited: {detail}")
            self._record(**entry)
            raise RateLimited(f"rate limited (429): {detail}", status=429, retry_after=retry_after) from None
        if status >= 500 or status in (408, 409):
            entry.update(status="error", error=f"{status}: {detail}")
            self._record(**entry)
            raise ServiceError(f"server error ({status}): {detail}", status=status) from None
        entry.update(status="error", error=f"{status}: {detail}")
        self._record(**entry)
        raise BadRequest(f"the LLM endpoint rejected the request ({status}): {detail}") from None

    def _fail_transient(self, entry: dict[str, Any], message: str, *, http_status: int | None = None) -> None:
        entry.update(status="error", error=message, http_status=http_status)
        self._record(**entry)
        raise ServiceError(message, status=http_status) from None


def _safe_text(response: Any) -> str:
    try:
        return response.text[:4000]
    except Exception:  # a body that cannot be read is simply not logged
        return ""


def _error_detail(error: openai.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:500]
    return _safe_text(error.response)[:500] or type(error).__name__

