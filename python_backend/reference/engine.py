"""The CPU reference engine: TensorRT-LLM's LLM API shape over the numpy model.

One engine thread runs the step loop (numpy releases the GIL in its kernels);
callers on an asyncio loop submit with `generate_async` and iterate the result.

Failing well: a step that raises is retried one request at a time from the state before
the step, so only the request that fails again ends with an error; a thread that dies
ends every request with an error; `health()` says when the thread is dead or stalled, for
the serving layer's watchdog.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import threading
import time
from typing import Sequence

import numpy as np

from python_backend.config import EngineConfig
from python_backend.prompt_limits import PromptLimits
from python_backend.protocol import InvalidRequestError, QueueResult, SamplingParams, StepOutput
from python_backend.reference.draft_policy import DraftPolicy
from python_backend.reference.faults import FaultInjector
from python_backend.reference.scheduler import Scheduler
from python_backend.reference.sequence import SequenceState
from python_backend.reference.speculative import SpeculativeDecoder

log = logging.getLogger(__name__)


def _first_id(value) -> int | None:
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return None if value is None else int(value)


class ReferenceEngine:
    def __init__(self, target, draft=None, *, draft_len: int = 0, max_batch_size: int = 32,
                 max_num_tokens: int = 8192, max_seq_len: int = 2048, eos_token_id: int | None = None,
                 max_concurrency: int | None = None, draft_len_schedule: dict[int, int] | None = None,
                 enable_chunked_prefill: bool = False, stall_timeout_s: float = 300.0):
        self.target = target
        policy = DraftPolicy(draft_len if draft is not None else 0, max_batch_size, max_num_tokens,
                             max_concurrency, draft_len_schedule)
        self.decoder = SpeculativeDecoder(target, draft, draft_len, policy)
        self.draft_len = self.decoder.draft_len
        self.max_seq_len = max_seq_len
        self.max_num_tokens = max_num_tokens
        # TensorRT-LLM's prompt rules (python_backend/prompt_limits.py); with chunked prefill on, a
        # prompt longer than max_num_tokens is admitted alone and prefilled in one step here
        self.limits = PromptLimits(max_seq_len, max_num_tokens, enable_chunked_prefill)
        self.vocab_size = target.config.vocab_size
        self.eos_token_id = eos_token_id if eos_token_id is not None else _first_id(
            getattr(target.config, "eos_token_id", None))
        self._scheduler = Scheduler(max_batch_size, max_num_tokens, max_seq_len, self.draft_len)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._inbox: list[SequenceState] = []
        self._aborts: set[int] = set()
        self._active: set[int] = set()
        self._wake = threading.Event()
        self._stopped = False
        self.steps = 0
        self.stall_timeout_s = stall_timeout_s
        self._step_started_at: float | None = None   # monotonic; None while idle
        self._death: str | None = None               # why the thread ended, if not by shutdown()
        self._faults = FaultInjector.from_environment()   # None in production
        if self._faults is not None:
            log.warning("reference engine: TEST fault injection is on (%s)", self._faults.seeds)
        self._thread = threading.Thread(target=self._run, name="reference-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: EngineConfig) -> "ReferenceEngine":
        from python_backend.reference.eagle3 import Eagle3DraftModel
        from python_backend.reference.llama import LlamaModel

        PromptLimits.from_config(config)   # a max_seq_len neither set nor deducible fails here, naming it
        weights = config.reference.weights
        target = LlamaModel.from_pretrained(config.model, weights)
        draft = None
        spec = config.speculative_config
        if config.draft_len > 0:
            if not spec.speculative_model_dir:
                raise InvalidRequestError("speculative_config.speculative_model_dir: required for Eagle decoding")
            draft = Eagle3DraftModel.from_pretrained(
                spec.speculative_model_dir, target.embed_tokens, target.config.num_hidden_layers,
                layers_to_capture=spec.eagle3_layers_to_capture)
            draft.use_weight_format(weights)
        return cls(target, draft, draft_len=config.draft_len, max_batch_size=config.max_batch_size,
                   max_num_tokens=config.max_num_tokens, max_seq_len=config.max_seq_len,
                   max_concurrency=spec.max_concurrency if spec else None,
                   draft_len_schedule=spec.draft_len_schedule if spec else None,
                   enable_chunked_prefill=config.enable_chunked_prefill,
                   stall_timeout_s=config.watchdog_timeout_s)

    # -- the protocol -----------------------------------------------------------------
    def generate_async(self, prompt_token_ids: Sequence[int], sampling_params: SamplingParams,
                       streaming: bool = True) -> QueueResult:
        """Validate and enqueue; raises InvalidRequestError naming the field."""
        prompt = [int(t) for t in prompt_token_ids]
        self._validate(prompt, sampling_params)
        request_id = next(self._ids)
        sink = QueueResult(request_id, asyncio.get_running_loop(), streaming, self.abort)
        end_id = sampling_params.end_id if sampling_params.end_id is not None else self.eos_token_id
        seq = SequenceState(request_id, prompt, sampling_params, end_id if end_id is not None else -1, sink,
                            np.random.default_rng(sampling_params.seed))
        with self._lock:
            if self._stopped or self._death:
                raise RuntimeError(f"engine is not running: {self._death or 'shut down'}")
            self._inbox.append(seq)
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

    def health(self) -> str | None:
        """None while the engine thread serves; else why it cannot (dead, or stuck in one step)."""
        if self._death:
            return self._death
        if not self._thread.is_alive() and not self._stopped:
            return "the engine thread is gone"
        started = self._step_started_at
        if started is not None and time.monotonic() - started > self.stall_timeout_s:
            return f"the engine thread has been in one step for over {self.stall_timeout_s:g} s (stalled)"
        return None

    def shutdown(self) -> None:
        with self._lock:
            self._stopped = True
        self._wake.set()
        self._thread.join(timeout=10)

    def _validate(self, prompt: list[int], params: SamplingParams) -> None:
        if not prompt:
            raise InvalidRequestError("prompt_token_ids: must not be empty")
        problem = self.limits.problem(len(prompt))
        if problem:
            raise InvalidRequestError(f"prompt_token_ids: {problem}")
        bad = [t for t in prompt if not 0 <= t < self.vocab_size]
        if bad:
            raise InvalidRequestError(f"prompt_token_ids: id {bad[0]} outside the vocabulary (0..{self.vocab_size - 1})")
        params.validate()

    # -- the engine thread ------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as err:   # the thread is ending: say why, end every request
            self._death = f"the engine thread died: {err!r}"
            log.critical("reference engine: %s", self._death, exc_info=True)
            self._fail_all(self._death)
            return
        self._fail_all("engine shut down")

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self._stopped:
                    break
                inbox, self._inbox = self._inbox, []
                aborts, self._aborts = self._aborts, set()
            for seq in inbox:
                self._scheduler.add(seq)
            for request_id in aborts:
                seq = self._scheduler.remove(request_id)
                if seq is not None:
                    seq.finish_reason = "cancelled"
                    self._emit(seq, [])
            prefill, decode = self._scheduler.schedule()
            if not prefill and not decode:
                self._wake.wait()
                self._wake.clear()
                continue
            self._step_started_at = time.monotonic()
            self._step(prefill, decode)
            self._step_started_at = None

    def _step(self, prefill: list[SequenceState], decode: list[SequenceState]) -> None:
        now = time.monotonic()
        for seq in prefill:
            seq.timing.first_scheduled_time = now
        new_tokens = self._isolated_step(prefill, decode)
        self.steps += 1
        now = time.monotonic()
        for seq in prefill + decode:
            if seq.request_id not in new_tokens:
                continue   # failed alone, already ended
            emitted = self._scheduler.record(seq, new_tokens[seq.request_id])
            seq.stats.generation_steps += 1
            seq.stats.output_tokens = len(seq.output_ids)
            if emitted:
                seq.timing.first_token_time = seq.timing.first_token_time or now
                seq.timing.last_token_time = now
            self._emit(seq, emitted)

    def _isolated_step(self, prefill: list[SequenceState], decode: list[SequenceState]) -> dict[int, list[int]]:
        """One step; if it raises, each request is rolled back and retried alone, so one
        request's failure ends only that request (with an error) and the others keep going."""
        batch = prefill + decode
        before = {seq.request_id: _Snapshot.of(seq) for seq in batch}
        try:
            return self._forward(prefill, decode)
        except Exception as err:
            if len(batch) == 1:
                self._fail(batch[0], err)
                return {}
            log.warning("engine step of %d requests failed (%r); retrying each alone", len(batch), err)
        new_tokens: dict[int, list[int]] = {}
        for seq in batch:
            before[seq.request_id].restore(seq)
        for seq in batch:
            alone = ([seq], []) if seq in prefill else ([], [seq])
            try:
                new_tokens.update(self._forward(*alone))
            except Exception as err:
                self._fail(seq, err)
        return new_tokens

    def _forward(self, prefill: list[SequenceState], decode: list[SequenceState]) -> dict[int, list[int]]:
        new_tokens = self.decoder.step(prefill, decode)
        if self._faults is not None:
            self._faults.after_forward(prefill + decode)
        return new_tokens

    def _fail(self, seq: SequenceState, err: Exception) -> None:
        log.error("request %d failed in an engine step: %r", seq.request_id, err, exc_info=err)
        self._scheduler.remove(seq.request_id)
        seq.finish_reason = "error"
        self._emit(seq, [], error=f"engine step failed: {err}")

    def _emit(self, seq: SequenceState, tokens: list[int], error: str | None = None) -> None:
        if seq.finish_reason is not None:
            with self._lock:
                self._active.discard(seq.request_id)
                self._aborts.discard(seq.request_id)
        seq.sink.push(StepOutput(tokens, seq.finish_reason, dataclasses.replace(seq.stats),
                                 dataclasses.replace(seq.timing), error))

    def _fail_all(self, reason: str) -> None:
        with self._lock:
            self._stopped = True   # no new work: this thread is ending
            pending, self._inbox = self._inbox, []
        for seq in list(self._scheduler.running) + list(self._scheduler.waiting) + pending:
            seq.finish_reason = "error"
            self._emit(seq, [], error=reason)


@dataclasses.dataclass
class _Snapshot:
    """What one engine step changes in a sequence, to undo a failed step."""

    target_length: int | None
    draft_length: int | None
    catchup_token_ids: list[int]
    catchup_features: np.ndarray | None
    stats: object
    rng_state: dict

    @classmethod
    def of(cls, seq: SequenceState) -> "_Snapshot":
        return cls(seq.target_cache.length if seq.target_cache is not None else None,
                   seq.draft_cache.length if seq.draft_cache is not None else None,
                   seq.catchup_token_ids, seq.catchup_features, dataclasses.replace(seq.stats),
                   seq.rng.bit_generator.state)

    def restore(self, seq: SequenceState) -> None:
        # the step only appends to the caches and reassigns the catch-up fields
        if self.target_length is None:
            seq.target_cache = None
        elif seq.target_cache is not None:
            seq.target_cache.truncate(self.target_length)
        if self.draft_length is None:
            seq.draft_cache = None
        elif seq.draft_cache is not None:
            seq.draft_cache.truncate(self.draft_length)
        seq.catchup_token_ids, seq.catchup_features = self.catchup_token_ids, self.catchup_features
        seq.stats = self.stats
        seq.rng.bit_generator.state = self.rng_state
