"""`LLM` and `RequestOutput` of TensorRT-LLM 1.2 (tensorrt_llm/llmapi/llm.py), over a scripted model.

The "model" emits `<model>/fake_trtllm_script.json`'s output_token_ids, `tokens_per_step`
tokens per iteration (1 in the context iteration; at most max_draft_len + 1 under Eagle),
honouring max_tokens, end_id, stop_token_ids (stripped from the output as TensorRT-LLM does),
ignore_eos, min_tokens and abort(). Under Eagle it counts drafted/accepted tokens; like 1.2's
PyTorch path it leaves request_perf_metrics.speculative_decoding zeroed unless the script
sets populate_spec_dec_metrics. Test-only script keys: fail_after_steps (the iteration raises, as an
executor error does), final_finish_reason (e.g. "timeout").
"""
from __future__ import annotations

import asyncio
import datetime
import enum
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel

from tensorrt_llm.bindings.executor import RequestPerfMetrics
from tensorrt_llm.executor.result import CompletionOutput
from tensorrt_llm.llmapi.llm_args import TorchLlmArgs
from tensorrt_llm.sampling_params import SamplingParams

SCRIPT_FILE = "fake_trtllm_script.json"
CALLS_FILE = "fake_trtllm_calls.jsonl"


def jsonable(value: Any) -> Any:
    """A JSON view of LLM arguments for the call log (configs as dicts, sets sorted)."""
    if isinstance(value, BaseModel):
        return {"__type__": type(value).__name__, **jsonable(value.model_dump(exclude_unset=True))}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.name
    if hasattr(value, "__dataclass_fields__"):
        return {"__type__": type(value).__name__,
                **{k: jsonable(getattr(value, k)) for k in value.__dataclass_fields__ if not k.startswith("_")}}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class _ByteTokenizer:
    """Stands in for the checkpoint's tokenizer where the API tokenizes strings (bad/stop)."""

    def __init__(self, eos_token_id: int, pad_token_id: Optional[int]):
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))


def _delta(seconds: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=seconds)


@dataclass
class _Request:
    request_id: int
    prompt: list[int]
    params: SamplingParams
    streaming: bool
    output: "RequestOutput"
    loop: asyncio.AbstractEventLoop
    position: int = 0
    iterations: int = 0
    generated: list[int] = field(default_factory=list)
    aborted: bool = False
    drafted: int = 0
    accepted: int = 0
    arrival: float = field(default_factory=time.monotonic)
    first_scheduled: float = 0.0
    first_token: float = 0.0
    last_token: float = 0.0


class RequestOutput:
    """What generate_async returns: async-iterate for one update per engine iteration."""

    def __init__(self, request_id: int, prompt_token_ids: list[int], sampling_params: SamplingParams, llm: "LLM"):
        self.request_id = request_id
        self.id = request_id
        self.prompt_token_ids = prompt_token_ids
        self.sampling_params = sampling_params
        self.outputs = [CompletionOutput(0)]
        self.decoding_iter = 0
        self._done = False
        self._aborted = False
        self._llm = llm
        self._queue: asyncio.Queue = asyncio.Queue()

    @property
    def finished(self) -> bool:
        return self._done

    def abort(self) -> None:
        self._llm._abort(self.request_id)
        self._aborted = True

    def aborted(self) -> bool:
        return self._aborted

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._done:
            raise StopAsyncIteration
        self._handle(await self._queue.get())
        return self

    async def aresult(self):
        while not self._done:
            self._handle(await self._queue.get())
        return self

    def _handle(self, response: dict) -> None:
        if "error" in response:
            raise RuntimeError(response["error"])
        output = self.outputs[0]
        output._last_token_ids_len = len(output.token_ids)
        output.token_ids.extend(response["tokens"])
        self.decoding_iter = response["decoding_iter"]
        if self.sampling_params.return_perf_metrics:
            output.request_perf_metrics = response["metrics"]
        self._done = response["final"]
        if self._done:
            output.finish_reason = response["finish_reason"]


class LLM:
    """The PyTorch-backend LLM: arguments validated as TorchLlmArgs, one executor thread."""

    def __init__(self, model: str, tokenizer: Optional[Any] = None, **kwargs: Any):
        self.args = TorchLlmArgs(model=model, tokenizer=tokenizer, **kwargs)
        self._model_dir = Path(model)
        try:
            model_config = json.loads((self._model_dir / "config.json").read_text())
        except OSError as err:
            raise ValueError(f"Failed to infer model format: no config.json in {model} ({err})") from None
        self._script = json.loads((self._model_dir / SCRIPT_FILE).read_text())
        self._record({"call": "LLM", "kwargs": jsonable({"model": model, "tokenizer": tokenizer, **kwargs})})
        eos = model_config.get("eos_token_id")
        eos = eos[0] if isinstance(eos, list) else eos
        self.tokenizer = _ByteTokenizer(eos, model_config.get("pad_token_id"))
        # max_seq_len None: deduced from the checkpoint (trtllm-serve passes BuildConfig's None)
        self._max_seq_len = self.args.max_seq_len or model_config.get("max_position_embeddings")
        spec = self.args.speculative_config
        self._draft_len = spec.max_draft_len if spec is not None else 0
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._requests: dict[int, _Request] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fake-trtllm-executor", daemon=True)
        self._thread.start()

    def generate_async(self, inputs, sampling_params: Optional[SamplingParams] = None, lora_request=None,
                       prompt_adapter_request=None, streaming: bool = False, kv_cache_retention_config=None,
                       disaggregated_params=None, _postproc_params=None, scheduling_params=None,
                       cache_salt=None) -> RequestOutput:
        if isinstance(inputs, dict):
            inputs = inputs.get("prompt_token_ids")
        if not isinstance(inputs, list) or not all(isinstance(t, int) for t in inputs):
            raise TypeError("the test double takes prompts as token ids (list[int])")
        if self._stopped.is_set():
            raise RuntimeError("LLM is shut down")
        params = sampling_params or SamplingParams()
        params._setup(self.tokenizer)
        # llm.py _prepare_sampling_params: the LLM-level flag turns per-request metrics on too
        params.return_perf_metrics = params.return_perf_metrics or self.args.return_perf_metrics
        # llm.py BaseLLM._check_arguments, pytorch branch (commit 4c05a74891e4df8066f08ed4ce14b0972abe4e25)
        max_num_tokens, prompt_len = self.args.max_num_tokens, len(inputs) / self.args.context_parallel_size
        if not self.args.enable_chunked_prefill and max_num_tokens and prompt_len > max_num_tokens:
            raise ValueError(f"The sum of prompt length ({prompt_len}), query length (0) should not exceed "
                             f"max_num_tokens ({max_num_tokens})")
        # executor/base_worker.py _deduce_max_tokens: no room left is an error, a larger max_tokens is cut
        default_max_tokens = self._max_seq_len - len(inputs)
        if default_max_tokens <= 0:
            raise ValueError(f"`default_max_tokens` ({default_max_tokens}) must be greater than 0, "
                             f"`default_max_tokens` ({default_max_tokens}) = max_seq_len ({self._max_seq_len})"
                             f" - `splited_prompt_len` ({len(inputs)}) - `query_token_len` (0)")
        params.max_tokens = min(params.max_tokens, default_max_tokens)
        request_id = next(self._ids)
        output = RequestOutput(request_id, list(inputs), params, self)
        self._record({"call": "generate_async", "request_id": request_id, "prompt_token_ids": inputs,
                      "streaming": streaming, "sampling_params": jsonable(params.to_record())})
        with self._lock:
            self._requests[request_id] = _Request(request_id, list(inputs), params, streaming, output,
                                                  asyncio.get_running_loop())
        return output

    def shutdown(self) -> None:
        self._record({"call": "shutdown"})
        self._stopped.set()
        self._thread.join(timeout=5)

    def _abort(self, request_id: int) -> None:
        self._record({"call": "abort", "request_id": request_id})
        with self._lock:
            request = self._requests.get(request_id)
            if request is not None:
                request.aborted = True

    def _record(self, entry: dict) -> None:
        with open(self._model_dir / CALLS_FILE, "a") as log:
            log.write(json.dumps(entry) + "\n")

    # -- the executor thread ---------------------------------------------------------
    def _run(self) -> None:
        delay = float(self._script.get("step_delay_s", 0.005))
        while not self._stopped.wait(delay):
            with self._lock:
                requests = list(self._requests.values())
            for request in requests:
                if request.iterations >= self._script.get("fail_after_steps", float("inf")):
                    # what an executor failure looks like to the caller: the iteration raises
                    self._push_raw(request, {"error": "executor failure (scripted by the test)"})
                    with self._lock:
                        self._requests.pop(request.request_id, None)
                    continue
                finished, reason, tokens = self._iterate(request)
                if finished and reason != "cancelled":
                    reason = self._script.get("final_finish_reason", reason)
                if finished or request.streaming:
                    self._push(request, tokens if request.streaming else request.generated, finished, reason)
                if finished:
                    with self._lock:
                        self._requests.pop(request.request_id, None)

    def _iterate(self, request: _Request) -> tuple[bool, Optional[str], list[int]]:
        now = time.monotonic()
        if request.aborted:
            return True, "cancelled", []
        if request.iterations == 0:
            request.first_scheduled = now
        per_step = self._script.get("tokens_per_step", [1])
        count = 1 if request.iterations == 0 or not self._draft_len else \
            min(per_step[(request.iterations - 1) % len(per_step)], self._draft_len + 1)
        if request.iterations > 0 and self._draft_len:
            request.drafted += self._draft_len
            request.accepted += count - 1
        request.iterations += 1
        params, script = request.params, self._script["output_token_ids"]
        new: list[int] = []
        for _ in range(count):
            if request.position >= len(script):
                return self._finish(request, new, "length", now)
            token = script[request.position]
            request.position += 1
            before_min = len(request.generated) + len(new) < (params.min_tokens or 0)
            if not params.ignore_eos and token == params.end_id:
                if before_min:
                    continue
                return self._finish(request, new, "stop", now)
            if token in (params.stop_token_ids or []) and not before_min:
                return self._finish(request, new, "stop", now)
            new.append(token)
            if len(request.generated) + len(new) >= params.max_tokens:
                return self._finish(request, new, "length", now)
        request.generated += new
        if new:
            request.first_token = request.first_token or now
            request.last_token = now
        return False, None, new

    def _finish(self, request: _Request, new: list[int], reason: str, now: float):
        request.generated += new
        if new:
            request.first_token = request.first_token or now
            request.last_token = now
        return True, reason, new

    def _push(self, request: _Request, tokens: list[int], final: bool, reason: Optional[str]) -> None:
        metrics = RequestPerfMetrics()
        timing = metrics.timing_metrics
        timing.arrival_time, timing.first_scheduled_time = _delta(request.arrival), _delta(request.first_scheduled)
        timing.first_token_time, timing.last_token_time = _delta(request.first_token), _delta(request.last_token)
        if self._script.get("populate_spec_dec_metrics") and request.drafted:
            spec = metrics.speculative_decoding
            spec.total_draft_tokens, spec.total_accepted_draft_tokens = request.drafted, request.accepted
            spec.acceptance_rate = request.accepted / request.drafted
        self._push_raw(request, {"tokens": list(tokens), "final": final, "finish_reason": reason,
                                 "metrics": metrics, "decoding_iter": request.iterations})

    @staticmethod
    def _push_raw(request: _Request, response: dict) -> None:
        try:
            request.loop.call_soon_threadsafe(request.output._queue.put_nowait, response)
        except RuntimeError:   # the caller's event loop is gone
            pass
