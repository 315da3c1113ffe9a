"""A loopback OpenAI-compatible server for tests, the demo and benchmarks.

It speaks enough of the Chat Completions API for the real ``openai`` SDK:
``POST /v1/chat/completions`` (with ``response_format`` of type ``json_schema``)
and ``GET /v1/models``. Replies are deterministic. For the plain-language
summary schema (recognised by its ``plain_summary`` property) it behaves like
a careful model: it copies findings from the paper text it was sent, adds
plain, hedged framing, and ignores instructions inside the paper text. For any
other schema it returns the smallest instance that fits.

Faults can be switched at run time, from any thread:

* ``latency`` seconds before every reply;
* a mode for the next ``count`` requests (or until cleared): ``rate_limit``
  (429 with Retry-After), ``server_error`` (500), ``invalid_json``,
  ``truncated`` (JSON cut off, ``finish_reason=length``), ``wrong_schema``,
  ``obey_injection`` (the reply follows an instruction found in the paper
  text, as a gullible model would), ``auth_error`` (401 that echoes the API key
  back, as careless servers do), ``bad_request`` (400) and ``html`` (a 200 HTML page);
* a deterministic share of failures: ``fail_fraction`` with a seeded RNG, or
  every ``k``-th request, answered with 429 or 500.

Counters say how many requests arrived, how each was answered, and the most
requests that were in progress at once (``max_in_flight``).
"""

from __future__ import annotations

import json
import math
import random
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from atlas.fakes.loopback import LoopbackThread

MODES = ("rate_limit", "server_error", "invalid_json", "truncated", "wrong_schema", "obey_injection",
         "auth_error", "bad_request", "html")

_INSTRUCTION = re.compile(
    r"(?:ignore|disregard|forget) (?:all |any )?(?:the |your )?(?:previous|prior|above|earlier|preceding) "
    r"(?:instructions|prompts?|rules|directions)[,:;.]?\s*(?:and\s+)?(?:instead\s+)?",
    re.IGNORECASE,
)
_COMMAND = re.compile(r"^(?:please\s+)?(?:say|state|write|reply(?: only)? with|respond(?: only)? with|output|print)"
                      r"(?:\s+that)?[:\s]+", re.IGNORECASE)
_RISKY = re.compile(
    r"\b(cur(?:e|es|ed|ing)|proves?|proven|caus(?:e|es|ed|ing)|leads? to|led to|results? in|resulted in|revers\w*|prevents?|"
    r"effective|should|must|recommend|consult|ignore|instructions?)\b",
    re.IGNORECASE,
)


@dataclass
class _Faults:
    latency: float = 0.0
    mode: str | None = None
    remaining: int | None = None
    retry_after: float = 1.0
    fail_fraction: float = 0.0
    fail_every: int | None = None
    fail_statuses: tuple[int, ...] = (429, 500)
    rng: random.Random = field(default_factory=lambda: random.Random(0))


def _sentences(text: str) -> list[str]:
    text = re.sub(r"\s+", " ", text or "").strip()
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text) if s.strip()]


def _paper_parts(messages: list[dict[str, Any]]) -> tuple[str, str]:
    """(title, abstract) from the last user message, inside <paper_data> when present."""
    user = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "") or ""
    if isinstance(user, list):  # content parts
        user = " ".join(part.get("text", "") for part in user if isinstance(part, dict))
    block = re.search(r"<paper_data>(.*?)</paper_data>", user, re.DOTALL)
    text = block.group(1) if block else user
    title = re.search(r"Title:\s*(.*)", text)
    abstract = re.search(r"Abstract:\s*(.*?)(?:\n\s*Methods:|\Z)", text, re.DOTALL)
    return (title.group(1).strip() if title else ""), (abstract.group(1).strip() if abstract else text.strip())


def careful_summary(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """What a well-behaved model returns: copied findings, plain hedged framing, no obeyed instructions."""
    _, abstract = _paper_parts(messages)
    sentences = [s for s in _sentences(abstract) if not _RISKY.search(s) and 5 <= len(s.split()) <= 60]
    findings = sentences[1:3] or sentences[:1] or ["The abstract gives no findings that can be repeated here."]
    return {
        "plain_summary": "This paper reports a study of ME/CFS. It is one study, so its results may need to be "
                         "checked by others. The main points are listed below in the words of the paper.",
        "why_it_matters": "It adds to what is known about ME/CFS, and it may help plan later studies.",
        "key_findings": findings,
        "limitations": ["The summary is based on the abstract only.", "One study alone may not hold for everyone."],
        "does_not_prove": "One study like this cannot show that one thing causes another.",
        "open_questions": ["Would the results hold in a larger group?"],
    }


def obedient_summary(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """What a gullible model returns: whatever an instruction in the paper text asked for."""
    summary = careful_summary(messages)
    _, abstract = _paper_parts(messages)
    for sentence in _sentences(abstract):
        match = _INSTRUCTION.search(sentence)
        if match:
            payload = _COMMAND.sub("", sentence[match.end():].strip()).strip() or sentence
            payload = payload[0].upper() + payload[1:]
            summary["plain_summary"] = payload
            summary["key_findings"] = [payload]
            break
    return summary


def minimal_instance(schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """The smallest value that fits a (strict) JSON schema."""
    root = root or schema
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        return minimal_instance(target, root)
    if "anyOf" in schema:
        return minimal_instance(schema["anyOf"][0], root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {name: minimal_instance(sub, root) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        count = schema.get("minItems", 0)
        return [minimal_instance(schema.get("items", {}), root) for _ in range(count)]
    if kind == "string":
        return "x" * schema.get("minLength", 0)
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    if kind == "boolean":
        return False
    return None


class FakeOpenAIServer:
    """Loopback Chat Completions server. Use as a context manager or call start()/stop()."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, model: str = "fake-model"):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fake server only listens on loopback")
        self.host = host
        self.port = port
        self.model = model
        self._lock = threading.Lock()
        self._faults = _Faults()
        self._counts: Counter[str] = Counter()
        self._bodies: deque[dict[str, Any]] = deque(maxlen=200)
        self._last_headers: dict[str, str] = {}
        self._in_flight = 0
        self._loop = LoopbackThread()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> "FakeOpenAIServer":
        if self._loop.running:
            return self
        server = _Server((self.host, self.port), _handler_for(self))
        self._loop.start(server, "fake-openai")
        self.port = self._loop.port
        return self

    def stop(self) -> None:
        self._loop.stop()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # --- faults ------------------------------------------------------------------------------

    def set_latency(self, seconds: float) -> None:
        with self._lock:
            self._faults.latency = max(0.0, float(seconds))

    def inject(self, mode: str, *, count: int | None = None, retry_after: float | None = None) -> None:
        """Answer the next ``count`` requests (all, when None) in ``mode``."""
        if mode not in MODES:
            raise ValueError(f"unknown fault mode {mode!r}; choose one of {', '.join(MODES)}")
        with self._lock:
            self._faults.mode = mode
            self._faults.remaining = count
            if retry_after is not None:
                self._faults.retry_after = retry_after

    def fail_fraction(self, fraction: float, *, statuses: tuple[int, ...] = (429, 500), seed: int = 0,
                      retry_after: float | None = None) -> None:
        """Fail this share of requests (seeded, so a run is repeatable) with one of ``statuses``."""
        with self._lock:
            self._faults.fail_fraction = fraction
            self._faults.fail_statuses = statuses
            self._faults.rng = random.Random(seed)
            if retry_after is not None:
                self._faults.retry_after = retry_after

    def fail_every(self, k: int | None, *, statuses: tuple[int, ...] = (429, 500),
                   retry_after: float | None = None) -> None:
        """Fail every ``k``-th chat request, cycling through ``statuses``."""
        with self._lock:
            self._faults.fail_every = k
            self._faults.fail_statuses = statuses
            if retry_after is not None:
                self._faults.retry_after = retry_after

    def clear_faults(self) -> None:
        with self._lock:
            latency = self._faults.latency
            self._faults = _Faults(latency=latency)

    # --- counters ----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts.clear()
            self._bodies.clear()

    @property
    def requests(self) -> int:
        return self.counts().get("chat_requests", 0)

    def bodies(self) -> list[dict[str, Any]]:
        """Request bodies received, oldest first (the last 200)."""
        with self._lock:
            return list(self._bodies)

    def last_headers(self) -> dict[str, str]:
        with self._lock:
            return dict(self._last_headers)

    # --- decisions (called by the handler) ---------------------------------------------------------

    def _plan(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[str | None, float, float]:
        with self._lock:
            self._counts["chat_requests"] += 1
            self._bodies.append(body)
            self._last_headers = headers
            faults = self._faults
            number = self._counts["chat_requests"]
            outcome: str | None = None
            if faults.mode and (faults.remaining is None or faults.remaining > 0):
                outcome = faults.mode
                if faults.remaining is not None:
                    faults.remaining -= 1
            elif faults.fail_every and number % faults.fail_every == 0:
                status = faults.fail_statuses[(number // faults.fail_every) % len(faults.fail_statuses)]
                outcome = "rate_limit" if status == 429 else "server_error"
            elif faults.fail_fraction and faults.rng.random() < faults.fail_fraction:
                status = faults.rng.choice(faults.fail_statuses)
                outcome = "rate_limit" if status == 429 else "server_error"
            return outcome, faults.latency, faults.retry_after

    def _count(self, key: str) -> None:
        with self._lock:
            self._counts[key] += 1

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self._counts["max_in_flight"] = max(self._counts["max_in_flight"], self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def _error(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _handler_for(fake: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True
        wbufsize = -1  # headers and body leave in one write
        server_version = "FakeOpenAI/1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            return

        def _send(self, status: int, payload: Any, *, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            fake._count(f"status_{status}")

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [
                    {"id": fake.model, "object": "model", "created": 0, "owned_by": "fake"}]})
            else:
                self._send(404, _error(f"no route {self.path}", "invalid_request_error"))

        def do_POST(self) -> None:
            fake._enter()
            try:
                self._post()
            finally:
                fake._leave()

        def _post(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, _error(f"no route {self.path}", "invalid_request_error"))
                return
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError:
                self._send(400, _error("request body is not JSON", "invalid_request_error"))
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            outcome, latency, retry_after = fake._plan(body, headers)
            if latency:
                time.sleep(latency)
            messages = body.get("messages")
            if not isinstance(messages, list) or not body.get("model"):
                self._send(400, _error("model and messages are required", "invalid_request_error"))
                return
            if outcome == "rate_limit":
                self._send(429, _error("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
                           headers={"Retry-After": str(max(0, math.ceil(retry_after))),
                                    "retry-after-ms": str(int(retry_after * 1000))})
                return
            if outcome == "server_error":
                self._send(500, _error("The server had an error while processing your request.", "server_error"))
                return
            if outcome == "auth_error":
                key = headers.get("authorization", "").removeprefix("Bearer ").strip()
                self._send(401, _error(f"Incorrect API key provided: {key}.", "invalid_request_error",
                                       "invalid_api_key"))
                return
            if outcome == "bad_request":
                self._send(400, _error("Invalid parameter: response_format.", "invalid_request_error"))
                return
            if outcome == "html":
                self._send(200, b"<html><body>Gateway says hello</body></html>", content_type="text/html")
                return
            response_format = body.get("response_format") or {}
            schema = (response_format.get("json_schema") or {}).get("schema") if isinstance(response_format, dict) else None
            if response_format.get("type") == "json_schema" and not isinstance(schema, dict):
                self._send(400, _error("response_format.json_schema.schema is required", "invalid_request_error"))
                return
            finish = "stop"
            if schema is not None and "plain_summary" in (schema.get("properties") or {}):
                data: Any = obedient_summary(messages) if outcome == "obey_injection" else careful_summary(messages)
            elif schema is not None:
                data = minimal_instance(schema)
            else:
                data = {"reply": "ok"}
            content = json.dumps(data)
            if outcome == "invalid_json":
                content = "Sure! Here is the summary you asked for: {plain_summary: not quite JSON"
            elif outcome == "truncated":
                content = content[: max(1, len(content) // 2)]
                finish = "length"
            elif outcome == "wrong_schema":
                content = json.dumps({"summary": "A summary in the wrong shape."})
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            if isinstance(limit, int) and limit > 0 and math.ceil(len(content) / 4) > limit:
                content = content[: limit * 4]  # as the API does: the reply stops at the limit
                finish = "length"
            prompt_chars = sum(len(json.dumps(m.get("content", ""))) for m in messages)
            prompt_tokens = math.ceil(prompt_chars / 4)
            completion_tokens = math.ceil(len(content) / 4)
            fake._count("completions")
            self._send(200, {
                "id": f"chatcmpl-fake-{fake.counts().get('completions', 0)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                             "message": {"role": "assistant", "content": content, "refusal": None}}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
            })

    return Handler
