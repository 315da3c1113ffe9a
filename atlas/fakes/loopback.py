"""Serving an HTTP server from a daemon thread on loopback: the lifecycle both fakes share."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer


class LoopbackThread:
    """Owns one running server and its thread; ``stop`` is safe to call twice."""

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the server is not started")
        return self._server.server_address[1]

    def start(self, server: ThreadingHTTPServer, name: str) -> None:
        host = server.server_address[0]
        if host not in ("127.0.0.1", "localhost", "::1"):
            server.server_close()
            raise ValueError(f"fake servers listen on loopback only, not {host}")
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name,
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None
