"""Test-only fault injection for the reference engine: off unless an environment variable asks.

The fail-well tests start a real tritonserver with `TRITON_EAGLE_TEST_FAULTS` set and pick the
request that misbehaves by its `random_seed` (an input every client path carries):

    TRITON_EAGLE_TEST_FAULTS="fail-request=7001,kill-engine=7002,stall-engine=7003"

- fail-request: every engine step holding that request raises, after the batched forward has
  already written every sequence's KV cache (so recovery must roll the others back);
- kill-engine: the engine thread dies (an exception no handler in the step loop catches);
- stall-engine: the engine thread stops stepping (sleeps for an hour).

Production never sets the variable; then `FaultInjector.from_environment()` is None and the
engine does no checks at all.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

FAULTS_ENV = "TRITON_EAGLE_TEST_FAULTS"
FAULT_KINDS = ("fail-request", "kill-engine", "stall-engine")
STALL_S = 3600.0


class InjectedFault(RuntimeError):
    """The failure of one request's step, raised on purpose."""


class EngineKilled(BaseException):
    """Escapes every `except Exception` in the step loop, as a crash of the thread would."""


@dataclass(frozen=True)
class FaultInjector:
    seeds: dict[int, str]   # random_seed -> fault kind

    @classmethod
    def from_environment(cls) -> "FaultInjector | None":
        spec = os.environ.get(FAULTS_ENV, "").strip()
        if not spec:
            return None
        seeds = {}
        for item in spec.split(","):
            kind, _, seed = item.strip().partition("=")
            if kind not in FAULT_KINDS or not seed.strip().isdigit():
                raise ValueError(f"{FAULTS_ENV}: {item!r} is not KIND=SEED with KIND one of {', '.join(FAULT_KINDS)}")
            seeds[int(seed)] = kind
        return cls(seeds)

    def after_forward(self, seqs) -> None:
        """Called by the engine right after a step's batched forward, inside its error handling."""
        for seq in seqs:
            kind = self.seeds.get(seq.params.seed)
            if kind == "fail-request":
                raise InjectedFault(f"injected failure of request {seq.request_id}")
            if kind == "kill-engine":
                raise EngineKilled(f"injected death of the engine thread (request {seq.request_id})")
            if kind == "stall-engine":
                time.sleep(STALL_S)
