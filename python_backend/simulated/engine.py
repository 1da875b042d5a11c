"""The SIMULATED engine: the engine protocol at a seed deployment's published B200 pace.

No model compute. One thread runs engine iterations: each lasts `base_ms + per_request_ms * n`
(the profile's step-time model, n = requests in the iteration) and then hands every running request
its tokens: one on its first iteration (the context phase), then 1 + accepted drafts, where each of
the `max_draft_len` drafts is accepted only if the one before it was (chain drafting) with the
probability that makes the mean tokens per iteration the model card's acceptance length for the
request's MT-Bench category. The tokens are a real answer in the deployment's chat format
(answers.py), so pre- and postprocessing do their real work. Nothing it produces is a measurement.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from python_backend.config import ConfigError, EngineConfig
from python_backend.protocol import InvalidRequestError, QueueResult, SamplingParams, SpeculativeStats, StepOutput
from python_backend.simulated.answers import AnswerBook
from python_backend.simulated.profile import SimulationProfile, load_profile

PROFILE_DRAFT_LEN = 3   # the model cards' acceptance lengths are for draft length 3
# the OS-level thread name, so a benchmark can tell the simulation's own CPU time from the serving
# layer's (triton_eagle/process_cpu.py): on a GPU host the engine's work runs elsewhere
ENGINE_THREAD_NAME = "sim-engine"


def name_os_thread(name: str) -> None:
    """Set the calling thread's name as `ps -L` and /proc show it (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)   # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def chain_acceptance_probability(acceptance_length: float, draft_len: int) -> float:
    """p such that 1 + p + p^2 + ... + p^draft_len = acceptance_length (bisection)."""
    low, high = 0.0, 1.0
    for _ in range(60):
        middle = (low + high) / 2
        if sum(middle ** i for i in range(draft_len + 1)) < acceptance_length:
            low = middle
        else:
            high = middle
    return (low + high) / 2


@dataclass(eq=False)
class _Request:
    request_id: int
    params: SamplingParams
    end_id: int
    script: list[int]            # the answer's token ids, end token last
    accept_p: float
    sink: QueueResult
    rng: np.random.Generator
    position: int = 0
    output_tokens: int = 0
    first: bool = True
    stats: SpeculativeStats = field(default_factory=SpeculativeStats)

    def take(self, count: int) -> tuple[list[int], str | None]:
        """The next `count` tokens of the script and the finish reason they reach."""
        tokens: list[int] = []
        params = self.params
        while len(tokens) < count:
            token = self.script[self.position % len(self.script)]
            self.position += 1
            if token == self.end_id and (params.ignore_eos or self.output_tokens + len(tokens) < params.min_tokens):
                continue   # the answer is over but the request wants more: start it again
            tokens.append(token)
            if token == self.end_id:
                return tokens, "stop"
            if self.output_tokens + len(tokens) >= params.max_tokens:
                return tokens, "length"
        return tokens, None


class SimulatedEngine:
    def __init__(self, profile: SimulationProfile, answers: AnswerBook, *, draft_len: int = PROFILE_DRAFT_LEN,
                 max_batch_size: int = 32, max_seq_len: int = 8192, seed: int = 0):
        if draft_len not in (0, PROFILE_DRAFT_LEN):
            raise ConfigError(f"speculative_config.max_draft_len: the simulation's acceptance figures are for "
                              f"draft length {PROFILE_DRAFT_LEN}, got {draft_len}")
        self.profile = profile
        self.answers = answers
        self.draft_len = draft_len
        self.max_batch_size = max_batch_size
        self.max_seq_len = max_seq_len
        self.eos_token_id = answers.end_id
        self.vocab_size = answers.vocab_size
        self._accept_p = {category: chain_acceptance_probability(length, PROFILE_DRAFT_LEN)
                          for category, length in profile.acceptance_length.items()}
        self._accept_p[None] = chain_acceptance_probability(profile.mean_acceptance_length, PROFILE_DRAFT_LEN)
        self._seeds = np.random.SeedSequence(seed)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiting: deque[_Request] = deque()
        self._aborts: set[int] = set()
        self._active: set[int] = set()
        self._wake = threading.Event()
        self._stopped = False
        self.iterations = 0
        self._busy_s = 0.0                     # wall time of the busy periods before the current one
        self._busy_since: float | None = None  # start of the current busy period
        self._last_end = 0.0
        self._thread = threading.Thread(target=self._run, name="simulated-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: EngineConfig) -> "SimulatedEngine":
        """`model:` names the profile (a packaged name or a path relative to the YAML)."""
        from ensemble.tokenizer import load_tokenizer

        try:
            profile = load_profile(config.model)
        except ValueError as err:
            raise ConfigError(f"model: {err}") from None
        tokenizer = load_tokenizer(config.tokenizer_dir, config.chat_format, config.reasoning_effort)
        return cls(profile, AnswerBook(tokenizer), draft_len=config.draft_len,
                   max_batch_size=config.max_batch_size, max_seq_len=config.max_seq_len)

    # -- the protocol -----------------------------------------------------------------
    def generate_async(self, prompt_token_ids: Sequence[int], sampling_params: SamplingParams,
                       streaming: bool = True) -> QueueResult:
        prompt = [int(t) for t in prompt_token_ids]
        if not prompt:
            raise InvalidRequestError("prompt_token_ids: must not be empty")
        if len(prompt) >= self.max_seq_len:
            raise InvalidRequestError(f"prompt_token_ids: prompt has {len(prompt)} tokens, max_seq_len is "
                                      f"{self.max_seq_len}; shorten the prompt")
        sampling_params.validate()
        request_id = next(self._ids)
        sink = QueueResult(request_id, asyncio.get_running_loop(), streaming, self.abort)
        category, script = self.answers.for_prompt(prompt)
        end_id = sampling_params.end_id if sampling_params.end_id is not None else self.eos_token_id
        if script[-1] != end_id:   # a client's own end_id: the answer ends with it instead
            script = script[:-1] + [end_id]
        request = _Request(request_id, sampling_params, end_id, script, self._accept_p[category], sink,
                           np.random.default_rng(self._seeds.spawn(1)[0]))
        with self._lock:
            if self._stopped:
                raise RuntimeError("engine is shut down")
            self._waiting.append(request)
            self._active.add(request_id)
        self._wake.set()
        return sink

    def abort(self, request_id: int) -> None:
        with self._lock:
            if request_id in self._active:
                self._aborts.add(request_id)
        self._wake.set()

    def num_active_requests(self) -> int:
        with self._lock:
            return len(self._active)

    def shutdown(self) -> None:
        with self._lock:
            self._stopped = True
        self._wake.set()
        self._thread.join(timeout=10)

    @property
    def mean_step_s(self) -> float:
        """Wall time per iteration while requests ran (what the step-time model promises)."""
        current = self._last_end - self._busy_since if self._busy_since is not None else 0.0
        return (self._busy_s + current) / self.iterations if self.iterations else 0.0

    # -- the engine thread ------------------------------------------------------------
    def _run(self) -> None:
        name_os_thread(ENGINE_THREAD_NAME)
        running: list[_Request] = []
        next_start = time.perf_counter()
        while True:
            with self._lock:
                if self._stopped:
                    break
                aborts, self._aborts = self._aborts, set()
                while self._waiting and len(running) < self.max_batch_size:
                    running.append(self._waiting.popleft())
                waiting_aborted = [r for r in self._waiting if r.request_id in aborts]
                for request in waiting_aborted:
                    self._waiting.remove(request)
            finished = [(r, StepOutput([], "cancelled", dataclasses.replace(r.stats)))
                        for r in running + waiting_aborted if r.request_id in aborts]
            running = [r for r in running if r.request_id not in aborts]
            self._deliver(finished)
            if not running:
                if self._busy_since is not None:
                    self._busy_s += self._last_end - self._busy_since
                    self._busy_since = None
                self._wake.wait()
                self._wake.clear()
                next_start = time.perf_counter()
                continue
            drafting = self.draft_len > 0
            step_s = self.profile.step_seconds(len(running), drafting)
            now = time.perf_counter()
            # iterations follow each other on a fixed schedule; a thread late by a whole step (the GIL,
            # a loaded host) starts afresh instead of bursting to catch up
            started = next_start if now - next_start < step_s else now
            if self._busy_since is None:
                self._busy_since = started
            ends = started + step_s
            outputs = [(request, self._advance(request, drafting)) for request in running]
            remaining = ends - time.perf_counter()
            if remaining > 0:
                time.sleep(remaining)
            self.iterations += 1
            self._last_end = time.perf_counter()
            next_start = ends
            self._deliver(outputs)
            running = [r for r, step in outputs if not step.finished]
        self._fail_all(running)

    def _advance(self, request: _Request, drafting: bool) -> StepOutput:
        stats = request.stats
        if request.first or not drafting:
            count = 1
        else:
            accepted = 0
            while accepted < self.draft_len and request.rng.random() < request.accept_p:
                accepted += 1
            count = 1 + accepted
        tokens, finish_reason = request.take(count)
        if drafting and not request.first:
            stats.drafting_steps += 1
            stats.total_draft_tokens += self.draft_len
            stats.total_accepted_draft_tokens += len(tokens) - 1
        request.first = False
        stats.generation_steps += 1
        request.output_tokens += len(tokens)
        stats.output_tokens = request.output_tokens
        return StepOutput(tokens, finish_reason, dataclasses.replace(stats))

    def _deliver(self, outputs: list[tuple[_Request, StepOutput]]) -> None:
        if not outputs:
            return
        with self._lock:
            for request, step in outputs:
                if step.finished:
                    self._active.discard(request.request_id)
        # one wake-up of the consumer's event loop per iteration, not one per request
        QueueResult.push_many([(request.sink, step) for request, step in outputs])

    def _fail_all(self, running: list[_Request]) -> None:
        with self._lock:
            left = running + list(self._waiting)
            self._waiting.clear()
        self._deliver([(r, StepOutput([], "error", dataclasses.replace(r.stats), error="engine shut down"))
                       for r in left])
