"""A per-client fixed-window rate limit (in memory, per worker process)."""

from __future__ import annotations

import threading
import time

MAX_CLIENTS = 10_000


class RateLimiter:
    """At most `per_minute` calls per client key in any one-minute window; 0 disables it."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._windows: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str, now: float | None = None) -> int:
        """Record a call; return 0 when allowed, else the seconds until the client may try again."""
        if self.per_minute <= 0:
            return 0
        now = time.monotonic() if now is None else now
        with self._lock:
            start, count = self._windows.get(key, (now, 0))
            if now - start >= 60.0:
                start, count = now, 0
            if count >= self.per_minute:
                return max(1, int(60.0 - (now - start)) + 1)
            if len(self._windows) >= MAX_CLIENTS and key not in self._windows:
                self._windows = {k: v for k, v in self._windows.items() if now - v[0] < 60.0}
            self._windows[key] = (start, count + 1)
            return 0
