"""Who gets in: a bounded queue, a drain before shutdown, no admission on a failed engine.

The `tensorrt_llm` model admits at most `max_batch_size + max_queue_size` requests at once
(running + waiting), for either engine: the limit lives in the serving layer, so it holds
whatever queue the engine itself keeps.
One more is refused at once with an error whose text starts with BUSY_PREFIX (an ensemble
puts its name in front), so a client,
a load balancer or the OpenAI server can tell "full, retry elsewhere" from a failure
(docs/interface.md §1, "Refusals"). The same refusal answers while the model drains for a
shutdown; a failed engine refuses with ENGINE_FAILED_PREFIX.
"""
from __future__ import annotations

BUSY_PREFIX = "server busy"
ENGINE_FAILED_PREFIX = "engine failed"
SHUTDOWN_PREFIX = "cancelled: server shutting down"


class Admission:
    def __init__(self, max_batch_size: int, max_queue_size: int):
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.draining = False
        self.failure: str | None = None   # why the engine cannot serve, once it cannot

    @property
    def limit(self) -> int:
        return self.max_batch_size + self.max_queue_size

    def refusal(self, admitted: int) -> str | None:
        """Why a new request is refused with `admitted` requests in, or None to admit it."""
        if self.failure:
            return f"{ENGINE_FAILED_PREFIX}: {self.failure}; this server is going down, retry on another"
        if self.draining:
            return f"{BUSY_PREFIX}: draining for shutdown, retry on another server"
        if admitted >= self.limit:
            return (f"{BUSY_PREFIX}: {admitted} requests admitted, the limit is {self.limit} "
                    f"(max_batch_size {self.max_batch_size} + max_queue_size {self.max_queue_size}); retry later")
        return None

    def queue_depth(self, admitted: int) -> int:
        """Admitted requests beyond the running batch: those waiting for a batch slot."""
        return max(admitted - self.max_batch_size, 0)
