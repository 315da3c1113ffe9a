"""A thread-safe request pacer shared by every call of one client.

NCBI counts requests per second, so bursts are what get a client blocked.
``RateLimiter`` hands out evenly spaced start times instead of a token
bucket's burst allowance: no 1-second window can ever hold more than
``rate`` request starts, however many threads share the limiter.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Spaces calls to ``acquire()`` at least ``1 / rate_per_second`` apart.

    ``headroom`` widens the spacing by a fraction (0.02 = 2 %) so that jitter
    between the client's clock and the server's arrival times cannot squeeze
    ``rate + 1`` requests into one of the server's 1-second windows.
    """

    def __init__(
        self,
        rate_per_second: float,
        *,
        headroom: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not rate_per_second or rate_per_second <= 0:
            raise ValueError(f"rate_per_second must be a positive number, got {rate_per_second!r}")
        if headroom < 0:
            raise ValueError(f"headroom must be >= 0, got {headroom!r}")
        self.rate_per_second = float(rate_per_second)
        self.interval = (1.0 / self.rate_per_second) * (1.0 + headroom)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot: float | None = None
        self.acquired = 0
        self.waited_seconds = 0.0

    def acquire(self) -> float:
        """Block until this caller's slot; return the seconds spent waiting."""
        with self._lock:
            now = self._clock()
            slot = now if self._next_slot is None else max(now, self._next_slot)
            self._next_slot = slot + self.interval
            self.acquired += 1
            wait = slot - now
            self.waited_seconds += wait
        if wait > 0:
            self._sleep(wait)
        return wait

    def defer(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (after a 429 with Retry-After)."""
        if seconds <= 0:
            return
        with self._lock:
            resume = self._clock() + seconds
            if self._next_slot is None or self._next_slot < resume:
                self._next_slot = resume

    def __repr__(self) -> str:
        return f"RateLimiter(rate_per_second={self.rate_per_second:g})"
