"""`TrtllmEngine`: TensorRT-LLM 1.2's `LLM` behind our engine protocol.

`generate_async` hands the prompt's token ids and the mapped SamplingParams to
`LLM.generate_async(..., streaming=True)`; iterating our result iterates TensorRT-LLM's
`RequestOutput` (one item per engine iteration) and turns `outputs[0].token_ids_diff`,
`finish_reason` and `request_perf_metrics` into StepOutputs; `abort()` is
`RequestOutput.abort()`, which TensorRT-LLM confirms with a final "cancelled" item.

Speculative counters: TensorRT-LLM 1.2's PyTorch path does not fill
`request_perf_metrics.speculative_decoding` (it arrives zeroed; a later release backfills
it). When it is zero we count from the stream itself: one item per iteration, the first
one the context phase, each later one verifying a draft, so accepted drafts = tokens beyond
one per iteration and drafted = max_draft_len per verifying iteration (an upper bound when
max_concurrency or draft_len_schedule shorten drafts). Tokens cut by a stop token or
max_tokens are not counted (TensorRT-LLM's own counters, when present, count them).

A request is refused before any token where TensorRT-LLM would refuse it (prompt length:
python_backend/prompt_limits.py) or silently do something other than asked (sampling under
one-model Eagle3, bad words on TorchSampler: decided on the installed package, features.py).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

from python_backend.config import ConfigError, EngineConfig
from python_backend.prompt_limits import PromptLimits
from python_backend.protocol import InvalidRequestError, SamplingParams, SpeculativeStats, StepOutput, TimingStats
from python_backend.trtllm.features import bad_words_enforced, draft_limit_notes, sampling_refusal
from python_backend.trtllm.llm_args import build_llm_args, import_tensorrt_llm, version_warning
from python_backend.trtllm.mpi_env import clear_inherited_mpi_job, refuse_mpi_world
from python_backend.trtllm.sampling import trtllm_sampling_kwargs

log = logging.getLogger(__name__)

FINISH_REASONS = {"stop": "stop", "length": "length", "cancelled": "cancelled"}


class TrtllmEngine:
    def __init__(self, llm, sampling_params_class, tokenizer, *, limits: PromptLimits, draft_len: int,
                 vocab_size: int | None = None, sampling_refused: str | None = None,
                 bad_words_enforced: bool = False):
        self._llm = llm
        self._sampling_params_class = sampling_params_class
        self._tokenizer = tokenizer
        self.eos_token_id: int = tokenizer.eos_token_id
        self.limits = limits
        self.max_seq_len = limits.max_seq_len
        self.draft_len = draft_len
        self.vocab_size = vocab_size if vocab_size is not None else tokenizer.vocab_size
        self._sampling_refused = sampling_refused      # why non-greedy requests are refused; None: sampled
        self._bad_words_enforced = bad_words_enforced
        self._active: set[TrtllmResult] = set()

    @classmethod
    def from_config(cls, config: EngineConfig) -> "TrtllmEngine":
        if config.engine != "trtllm":
            raise ConfigError(f"engine: TrtllmEngine serves `engine: trtllm`, got {config.engine!r}")
        removed = clear_inherited_mpi_job(os.environ)   # before tensorrt_llm (and mpi4py) is imported
        if removed:
            log.info(f"cleared inherited MPI job variables: {', '.join(removed)}")
        trtllm = import_tensorrt_llm()
        refuse_mpi_world()
        warning = version_warning(trtllm)
        if warning:
            log.warning(warning)
        from ensemble.tokenizer import load_tokenizer

        limits = PromptLimits.from_config(config)   # before the weights load: names max_seq_len if unknown
        tokenizer = load_tokenizer(config.tokenizer_dir, config.chat_format, config.reasoning_effort)
        llm_args = build_llm_args(config)
        try:
            llm = trtllm.LLM(**llm_args)
        except (ValueError, TypeError) as err:   # TensorRT-LLM's own validation of the LLM-API keys
            raise ConfigError(f"TensorRT-LLM refused the engine config {config.source_path or ''}: {err}") from err
        spec = llm.args.speculative_config
        for note in draft_limit_notes(spec):
            log.warning(note)
        draft_len = config.speculative_config.max_draft_len if config.speculative_config else 0
        return cls(llm, trtllm.SamplingParams, tokenizer, limits=limits,
                   draft_len=draft_len, vocab_size=_model_vocab_size(config.model),
                   sampling_refused=sampling_refusal(spec), bad_words_enforced=bad_words_enforced(llm.args))

    # -- the protocol -----------------------------------------------------------------
    def generate_async(self, prompt_token_ids: Sequence[int], sampling_params: SamplingParams,
                       streaming: bool = True) -> "TrtllmResult":
        """Validate and submit; raises InvalidRequestError naming the field."""
        prompt = [int(t) for t in prompt_token_ids]
        self._validate(prompt, sampling_params)
        kwargs = trtllm_sampling_kwargs(
            sampling_params, eos_token_id=self.eos_token_id,
            extra_stop_token_ids=getattr(self._tokenizer, "stop_token_ids", ()), decode=self._tokenizer.decode)
        output = self._llm.generate_async(prompt, sampling_params=self._sampling_params_class(**kwargs),
                                          streaming=streaming)
        result = TrtllmResult(output, self.draft_len, self._active.discard)
        self._active.add(result)
        return result

    def num_active_requests(self) -> int:
        return len(self._active)

    def shutdown(self) -> None:
        self._llm.shutdown()

    def _validate(self, prompt: list[int], params: SamplingParams) -> None:
        if not prompt:
            raise InvalidRequestError("prompt_token_ids: must not be empty")
        problem = self.limits.problem(len(prompt))
        if problem:
            raise InvalidRequestError(f"prompt_token_ids: {problem}")
        outside = [t for t in prompt if not 0 <= t < self.vocab_size]
        if outside:
            raise InvalidRequestError(
                f"prompt_token_ids: id {outside[0]} outside the vocabulary (0..{self.vocab_size - 1})")
        params.validate()
        if not params.greedy and self._sampling_refused:
            raise InvalidRequestError(
                f"temperature: {self._sampling_refused}; send temperature 0 or top_k 1, "
                f"got temperature {params.temperature:g} with top_k {params.top_k}")
        if params.bad_words_ids and not self._bad_words_enforced:
            raise InvalidRequestError(
                "bad_words: the installed TensorRT-LLM's sampler (TorchSampler) ignores bad words, so they would not "
                "be enforced; remove bad_words, or set sampler_type: TRTLLMSampler in the engine config")


class TrtllmResult:
    """One request: iterate for StepOutputs; `abort()` cancels."""

    def __init__(self, output, draft_len: int, on_done):
        self._output = output               # tensorrt_llm RequestOutput
        self._draft_len = draft_len
        self._on_done = on_done
        self.request_id = output.request_id
        self.finished = False
        self._responses_with_tokens = 0
        self._last_stats = SpeculativeStats()

    def abort(self) -> None:
        if not self.finished:
            self._output.abort()

    async def __aiter__(self) -> AsyncIterator[StepOutput]:
        last_stats, last_timing = SpeculativeStats(), TimingStats()
        try:
            async for output in self._output:
                step = self._step(output)
                last_stats, last_timing = step.stats, step.timing
                if step.finished:
                    self._done()
                yield step
                if step.finished:
                    return
            message = "TensorRT-LLM ended the request without a final response"
        except Exception as err:   # an executor error: end this request, keep the model
            message = f"TensorRT-LLM: {err}"
        finally:
            self._done()
        yield StepOutput([], "error", last_stats, last_timing, error=message)

    def _done(self) -> None:
        if not self.finished:
            self.finished = True
            self._on_done(self)

    def _step(self, output) -> StepOutput:
        completion = output.outputs[0]
        tokens = [int(t) for t in completion.token_ids_diff]
        if tokens:
            self._responses_with_tokens += 1
        finish_reason, error = None, None
        if output.finished:
            reason = completion.finish_reason or "stop"
            finish_reason = FINISH_REASONS.get(reason, "error")
            if finish_reason == "error":
                error = f"TensorRT-LLM ended the request: {reason}"
        metrics = getattr(completion, "request_perf_metrics", None)
        return StepOutput(tokens, finish_reason, self._stats(output, completion, metrics), _timing(metrics),
                          error)

    def _stats(self, output, completion, metrics) -> SpeculativeStats:
        output_tokens = len(completion.token_ids)
        iterations = getattr(output, "decoding_iter", None)
        if not isinstance(iterations, int) or iterations <= 0:
            iterations = self._responses_with_tokens
        drafting_steps = max(iterations - 1, 0) if self._draft_len else 0
        spec = getattr(metrics, "speculative_decoding", None)
        if spec is not None and spec.total_draft_tokens > 0:
            drafted, accepted = int(spec.total_draft_tokens), int(spec.total_accepted_draft_tokens)
        elif self._draft_len:
            accepted = max(output_tokens - iterations, 0)
            drafted = max(drafting_steps * self._draft_len, accepted)
        else:
            drafted = accepted = 0
        # counters only grow (an iteration ending on a stripped stop token adds no tokens)
        previous = self._last_stats
        accepted = max(accepted, previous.total_accepted_draft_tokens)
        self._last_stats = SpeculativeStats(
            total_draft_tokens=max(drafted, accepted, previous.total_draft_tokens),
            total_accepted_draft_tokens=accepted, drafting_steps=max(drafting_steps, previous.drafting_steps),
            generation_steps=max(iterations, previous.generation_steps), output_tokens=output_tokens)
        return self._last_stats


def _timing(metrics) -> TimingStats:
    timing = getattr(metrics, "timing_metrics", None)
    if timing is None:
        return TimingStats()
    return TimingStats(*(_seconds(getattr(timing, name, 0.0)) for name in
                         ("arrival_time", "first_scheduled_time", "first_token_time", "last_token_time")))


def _seconds(value: Any) -> float:
    """TensorRT-LLM reports steady-clock instants as datetime.timedelta."""
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value or 0.0)


def _model_vocab_size(model_dir: str) -> int | None:
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    size = config.get("vocab_size") if isinstance(config, dict) else None
    return size if isinstance(size, int) and size > 0 else None
