"""A thread beside the engine model that watches for the two reasons to stop serving.

- The engine fails: `engine.health()` (when the engine has one) returns why: a dead
  engine thread, or one stuck in a step past `watchdog_timeout_s`.
- A drain is asked for: the launcher (triton_eagle/tritonserver.py) writes the file named by
  DRAIN_FILE_ENV, holding the drain timeout in seconds, before it stops tritonserver.

Either is handed to the model's event loop (the only thread that may talk to Triton) once.
The model also calls `poll_drain()` as each request arrives, so no request slips in between
the launcher's ask and the next poll.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

DRAIN_FILE_ENV = "TRITON_EAGLE_DRAIN_FILE"
POLL_S = 0.2


def read_drain_timeout(path: Path) -> float | None:
    """The drain timeout the launcher wrote, or None when no drain is asked for."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        return max(float(text), 0.0)
    except ValueError:
        return 0.0   # unreadable: drain with no grace rather than not at all


class Watchdog:
    def __init__(self, engine, on_engine_failure: Callable[[str], None], on_drain: Callable[[float], None]):
        self._engine_health = getattr(engine, "health", None)
        drain_file = os.environ.get(DRAIN_FILE_ENV)
        self._drain_file = Path(drain_file) if drain_file else None
        self._on_engine_failure = on_engine_failure
        self._on_drain = on_drain
        self._drain_seen = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="engine-watchdog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failure_reported = False
        while not self._stop.wait(POLL_S):
            if not failure_reported and self._engine_health is not None:
                failure = self._engine_health()
                if failure:
                    failure_reported = True
                    self._on_engine_failure(failure)
            timeout_s = self.poll_drain()
            if timeout_s is not None:
                self._on_drain(timeout_s)

    def poll_drain(self) -> float | None:
        """The drain timeout the first time a drain is seen asked for; else None."""
        if self._drain_seen or self._drain_file is None:
            return None
        with self._lock:
            if self._drain_seen:
                return None
            timeout_s = read_drain_timeout(self._drain_file)
            self._drain_seen = timeout_s is not None
            return timeout_s

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
