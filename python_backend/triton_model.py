"""The decoupled `tensorrt_llm` Triton model: Triton requests in, engine steps out.

`execute` only parses each request and hands it to the engine (which runs on its own
thread); a per-request asyncio task on the backend's event loop then sends one
response per engine step, or per stream interval when steps come faster (coalescing.py),
the final one flagged. All Triton calls (responses, cancellation checks, metrics) happen
on that one event-loop thread: updates from several threads crashed tritonserver.

Failing well (python_backend/admission.py, watchdog.py): at most max_batch_size +
max_queue_size requests are admitted, the next is refused at once as busy; on a drain
(before a shutdown) nothing new is admitted and what still runs at the drain timeout ends
with a reason; a failed engine ends every request with an error and stops tritonserver,
so health checks see it not ready and an orchestrator restarts it.

Tensors and their meaning: docs/interface.md §1 (tensorrt_llm), §3 (context_ids).
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from ensemble.detokenizer import StopStringMatcher, context_window, needs_whole_output
from ensemble.tokenizer import load_tokenizer
from python_backend.admission import ENGINE_FAILED_PREFIX, SHUTDOWN_PREFIX, Admission
from python_backend.coalescing import CoalescedSteps, StreamInterval
from python_backend.config import load_engine_config
from python_backend.engines import build_engine
from python_backend.prompt_limits import PromptLimits
from python_backend.protocol import GenerationResult, InvalidRequestError, SpeculativeStats, StepOutput
from python_backend.request_tensors import (INPUTS, OUTPUTS, GenerateRequest, StopRequest,
                                            parse_request, response_arrays)
from python_backend.text_form import TEXT_INPUTS, TEXT_OUTPUTS, TextResponses, engine_arrays, is_text_request
from python_backend.triton_metrics import EngineModelMetrics
from python_backend.watchdog import Watchdog

DEFAULT_ENGINE_CONFIG = "tensorrt_llm/engine.yaml"   # relative to the model repository root
MAX_BATCH_SIZE = 64                                  # docs/interface.md §1: all models batch-dim'd
ABORT_DRAIN_TIMEOUT_S = 30.0   # after abort() the engine confirms with a final step; never wait forever
EXECUTE_SETTLE_S = 0.01
FINALIZE_TIMEOUT_S = 10.0
# Each metric update and each is_cancelled() is an IPC round trip to tritonserver: per streamed
# response they cost more than the response itself, so token counters are summed here and flushed
# at most this often (and before any final response), and cancellation is polled at most this often
# per request (a cancelled stream still ends well within a second).
METRICS_FLUSH_S = 0.1
CANCEL_POLL_S = 0.05
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
STOP_SERVER_DELAY_S = 1.0   # after ending requests on a failed engine: let their error responses go out


@dataclass(eq=False)
class ActiveRequest:
    request: object                 # pb_utils.InferenceRequest
    sender: object                  # its response sender
    parsed: GenerateRequest
    result: GenerationResult
    key: str | None                 # registry key: request_uuid, else the Triton request id
    stop_requested: bool = False
    cancel_polled_at: float = 0.0   # loop time of the last is_cancelled() call
    responses_sent: int = 0
    output_token_ids: list[int] = field(default_factory=list)   # kept tokens, sent or pending
    last_stats: SpeculativeStats = field(default_factory=SpeculativeStats)
    task: asyncio.Task | None = None
    ended_by: str | None = None     # why the model ended it itself (engine failure, drain timeout)
    text_form: bool = False         # text in, text out (python_backend/text_form.py)


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        config = auto_complete_model_config
        if config.as_dict().get("max_batch_size", 0) == 0:
            config.set_max_batch_size(MAX_BATCH_SIZE)
        for name, (data_type, dims, optional) in {**INPUTS, **TEXT_INPUTS}.items():
            config.add_input({"name": name, "data_type": data_type, "dims": dims, "optional": optional})
        for name, (data_type, dims) in {**OUTPUTS, **TEXT_OUTPUTS}.items():
            config.add_output({"name": name, "data_type": data_type, "dims": dims})
        config.set_model_transaction_policy({"decoupled": True})
        return config

    def initialize(self, args):
        self.logger = pb_utils.Logger
        model_config = json.loads(args["model_config"])
        if not pb_utils.using_decoupled_model_transaction_policy(model_config):
            raise pb_utils.TritonModelException("tensorrt_llm must be decoupled (it streams)")
        # args["model_repository"] is this model's folder; the config path is repository-relative
        repository_root = Path(args["model_repository"]).resolve().parent
        parameter = model_config.get("parameters", {}).get("engine_config", {}).get("string_value")
        config_path = repository_root / (parameter or DEFAULT_ENGINE_CONFIG)
        self.config = load_engine_config(config_path)
        ignored = self.config.ignored_keys()
        self.logger.log_info(f"tensorrt_llm: engine {self.config.engine} from {config_path}; model {self.config.model}")
        if ignored:
            self.logger.log_warn(f"tensorrt_llm: the {self.config.engine} engine ignores: {', '.join(ignored)}")
        for warning in self.config.load_warnings():
            self.logger.log_warn(f"tensorrt_llm: {warning}")
        self.tokenizer = load_tokenizer(self.config.tokenizer_dir, self.config.chat_format,
                                        self.config.reasoning_effort)   # for stop strings
        self.whole_context = needs_whole_output(self.tokenizer)   # context_ids: all tokens before (§3)
        self.text_responses = TextResponses(self.tokenizer, self.logger.log_error)
        self.engine = build_engine(self.config)
        try:   # config.pbtxt parameters stream_interval_ms / stream_interval_max_tokens
            self.stream_interval = StreamInterval.from_parameters(model_config.get("parameters", {}))
        except ValueError as err:
            raise pb_utils.TritonModelException(f"tensorrt_llm: {err}") from None
        self.vocab_size = getattr(self.engine, "vocab_size", None)
        self.metrics = EngineModelMetrics(args["model_name"], args["model_version"])
        self.unflushed_tokens = 0                       # counted, not yet in the metrics
        self.unflushed_stats = SpeculativeStats()
        self.flush_timer: asyncio.TimerHandle | None = None
        self.active: set[ActiveRequest] = set()
        self.by_key: dict[str, ActiveRequest] = {}
        self.tasks: set[asyncio.Task] = set()   # strong references: the loop keeps only weak ones
        self.loop: asyncio.AbstractEventLoop | None = None   # the backend's loop, known from execute
        self.admission = Admission(self.config.max_batch_size, self.config.queue_limit)
        self.watchdog = Watchdog(self.engine, on_engine_failure=lambda reason: self._on_loop(self._engine_failed, reason),
                                 on_drain=lambda timeout_s: self._on_loop(self._drain, timeout_s))

    async def execute(self, requests):
        self.loop = asyncio.get_running_loop()
        for request in requests:
            self._accept(request)
        # The stub runs this coroutine in the background and registers its future only after
        # scheduling it; one that ends first trips "Cannot remove future from background"
        # (python_backend 2.51, Stub::RunCoroutine) and leaks the future. Nothing waits on us.
        await asyncio.sleep(EXECUTE_SETTLE_S)
        return None

    def finalize(self):
        self.watchdog.stop()
        # Requests still running (an unload that timed out) are ended on the event loop, the
        # only thread that may talk to Triton, before the engine and the metrics go away.
        if self.loop is not None and self.active and self.loop.is_running():
            ending = asyncio.run_coroutine_threadsafe(self._end_all(), self.loop)
            try:
                ending.result(timeout=FINALIZE_TIMEOUT_S)
            except Exception as err:
                self.logger.log_warn(f"tensorrt_llm: requests still running at unload: {err!r}")
        self.engine.shutdown()
        if self.flush_timer is not None:   # counters held back at unload are dropped with the model
            self.flush_timer.cancel()
        self.metrics.close()

    async def _end_all(self) -> None:
        for entry in list(self.active):
            entry.stop_requested = True
            entry.result.abort()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=FINALIZE_TIMEOUT_S / 2)

    # -- accepting a request (runs inside execute, on the event loop) -----------------
    def _accept(self, request) -> None:
        sender = request.get_response_sender()
        try:
            arrays = self._input_arrays(request)
            limits = PromptLimits.from_config(self.config)
            text_form = is_text_request(arrays)
            parsed = parse_request(engine_arrays(arrays, self.tokenizer, limits), limits=limits,
                                   vocab_size=self.vocab_size, request_id=request.request_id())
            if isinstance(parsed, StopRequest):
                self._stop(parsed, sender)
                return
            drain_timeout_s = self.watchdog.poll_drain()
            if drain_timeout_s is not None:
                self._drain(drain_timeout_s)
            refusal = self.admission.refusal(len(self.active))
            if refusal:
                self.metrics.refused_at_admission("engine_failed" if self.admission.failure else "busy")
                self._refuse(sender, refusal, "UNAVAILABLE")
                return
            if parsed.request_uuid and parsed.request_uuid in self.by_key:
                raise InvalidRequestError(f"request_uuid: {parsed.request_uuid} is already running; "
                                          "send a fresh id per request")
            result = self.engine.generate_async(parsed.prompt_token_ids, parsed.sampling_params, streaming=True)
        except InvalidRequestError as err:
            self._refuse(sender, str(err))
            return
        except Exception as err:  # a bug here must cost one request, never the model
            self.logger.log_error(f"tensorrt_llm: request refused by an internal error: {err!r}")
            self._refuse(sender, f"internal error: {err}")
            return
        key = parsed.request_uuid or request.request_id() or None
        if key in self.by_key:   # a repeated client request id: the first holder keeps it
            key = None
        entry = ActiveRequest(request, sender, parsed, result, key, text_form=text_form)
        self.active.add(entry)
        if key:
            self.by_key[key] = entry
        self.metrics.request_started(len(parsed.prompt_token_ids))
        self._update_active_gauges()
        task = entry.task = asyncio.get_running_loop().create_task(self._stream(entry))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    @staticmethod
    def _input_arrays(request) -> dict[str, np.ndarray]:
        arrays = {}
        for name in (*INPUTS, *TEXT_INPUTS):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                arrays[name] = tensor.as_numpy()
        return arrays

    def _stop(self, stop: StopRequest, sender) -> None:
        entry = self.by_key.get(stop.target)
        if entry is not None and not entry.stop_requested:
            entry.stop_requested = True
            entry.result.abort()   # the engine answers with a final "cancelled" step, waking _stream
        # the stop request's own answer: one empty final response
        arrays = response_arrays(token_ids=[], context_ids=[], request_uuid=stop.target, finish_reason=None,
                                 stop_strings=(), num_input_tokens=0, num_output_tokens=0,
                                 stats=SpeculativeStats())
        self._send(sender, arrays, final=True)

    def _refuse(self, sender, message: str, code: str = "INVALID_ARG") -> None:
        self.metrics.request_refused()
        error = _triton_error(message, code)
        try:
            sender.send(pb_utils.InferenceResponse(output_tensors=[], error=error), flags=FINAL)
        except Exception as err:
            self.logger.log_warn(f"tensorrt_llm: could not send an error response: {err}")

    # -- streaming one request (its own task) -----------------------------------------
    async def _stream(self, entry: ActiveRequest) -> None:
        parsed = entry.parsed
        matcher = StopStringMatcher(self.tokenizer, parsed.stop_strings) if parsed.stop_strings else None
        context_size = context_window(parsed.stop_strings)
        pending: list[int] = []          # non-streaming: everything goes in the final response
        pending_context: list[int] = []
        finish_reason = "error"
        # streamed: at most one response per stream interval (python_backend/coalescing.py)
        steps = CoalescedSteps(entry.result, self.stream_interval if parsed.streaming else StreamInterval(0))
        try:
            while True:
                step: StepOutput = await anext(steps)
                if entry.stop_requested or self._cancelled(entry):
                    finish_reason = "cancelled"
                    await self._abort_and_drain(entry, steps, step)
                    self._send_step(entry, [], [], "cancelled")
                    return
                if step.error is not None:
                    finish_reason = "error"
                    self._finish_with_error(entry, step.error)
                    return
                tokens = list(step.token_ids_diff)
                finish_reason = step.finish_reason
                if tokens and not entry.output_token_ids:
                    self.metrics.first_token(step.timing)
                if matcher is not None:
                    keep = matcher.feed(tokens)
                    if keep is not None:   # the stream ends at the token completing a stop string
                        tokens, finish_reason = tokens[:keep], "stop"
                context = (list(entry.output_token_ids) if self.whole_context
                           else entry.output_token_ids[-context_size:])
                self._count(entry, tokens, step.stats)
                if parsed.streaming:
                    if tokens or finish_reason is not None:
                        self._send_step(entry, tokens, context, finish_reason)
                else:
                    if not pending:
                        pending_context = context
                    pending.extend(tokens)
                    if finish_reason is not None:
                        self._send_step(entry, pending, pending_context, finish_reason)
                if finish_reason is not None:
                    if not step.finished:   # stopped by a stop string: the engine still holds it
                        await self._abort_and_drain(entry, steps, None)
                    return
        except asyncio.CancelledError:   # ended by the model itself: see _end_all_with
            reason = entry.ended_by or "ended by the server"
            finish_reason = "cancelled" if reason.startswith(SHUTDOWN_PREFIX) else "error"
            entry.result.abort()
            self._finish_with_reason(entry, reason, finish_reason)
        except StopAsyncIteration:   # the engine ended without a final step: a bug, still end cleanly
            finish_reason = "error"
            self._finish_with_error(entry, "engine ended the request without a final step")
        except Exception as err:
            finish_reason = "error"
            self.logger.log_error(f"tensorrt_llm: streaming failed: {err!r}")
            entry.result.abort()
            self._finish_with_error(entry, f"internal error: {err}")
        finally:
            steps.close()
            self._release(entry, finish_reason or "error")

    async def _abort_and_drain(self, entry: ActiveRequest, steps, last: StepOutput | None) -> None:
        """Abort and wait for the engine's final step, so the slot is free when the gauges drop."""
        if last is not None and last.finished:
            return
        entry.result.abort()
        deadline = asyncio.get_running_loop().time() + ABORT_DRAIN_TIMEOUT_S
        try:
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                step = await asyncio.wait_for(anext(steps), timeout=max(remaining, 0.0))
                if step.finished:
                    return
        except (asyncio.TimeoutError, StopAsyncIteration):
            self.logger.log_warn("tensorrt_llm: the engine did not confirm an abort in time")

    def _cancelled(self, entry: ActiveRequest) -> bool:
        now = self.loop.time()
        if now - entry.cancel_polled_at < CANCEL_POLL_S:
            return False
        entry.cancel_polled_at = now
        return entry.request.is_cancelled()

    def _count(self, entry: ActiveRequest, tokens: list[int], stats: SpeculativeStats) -> None:
        previous, pending = entry.last_stats, self.unflushed_stats
        pending.total_draft_tokens += stats.total_draft_tokens - previous.total_draft_tokens
        pending.total_accepted_draft_tokens += stats.total_accepted_draft_tokens - previous.total_accepted_draft_tokens
        pending.drafting_steps += stats.drafting_steps - previous.drafting_steps
        self.unflushed_tokens += len(tokens)
        entry.last_stats = stats
        entry.output_token_ids.extend(tokens)
        if self.flush_timer is None:
            self.flush_timer = self.loop.call_later(METRICS_FLUSH_S, self._flush_metrics)

    def _flush_metrics(self) -> None:
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        if self.unflushed_tokens or self.unflushed_stats.drafting_steps:
            self.metrics.step(self.unflushed_tokens, self.unflushed_stats)
            self.unflushed_tokens, self.unflushed_stats = 0, SpeculativeStats()

    def _send_step(self, entry: ActiveRequest, tokens: list[int], context: list[int],
                   finish_reason: str | None) -> None:
        build = self.text_responses.arrays if entry.text_form else response_arrays
        arrays = build(
            token_ids=tokens, context_ids=context, request_uuid=entry.parsed.request_uuid,
            finish_reason=finish_reason, stop_strings=entry.parsed.stop_strings,
            num_input_tokens=len(entry.parsed.prompt_token_ids),
            num_output_tokens=len(entry.output_token_ids), stats=entry.last_stats)
        entry.responses_sent += 1
        if finish_reason is not None:   # a client that saw its final response sees its tokens counted
            self._flush_metrics()
        self._send(entry.sender, arrays, final=finish_reason is not None)

    def _finish_with_error(self, entry: ActiveRequest, message: str) -> None:
        if entry.responses_sent:
            # tokens are out already: steps after this model must not see an error mid-stream
            self.logger.log_error(f"tensorrt_llm: request ended by an error after tokens: {message}")
            self._send_step(entry, [], [], "error")
        else:
            error = pb_utils.TritonError(message)
            self._send_raw(entry.sender, pb_utils.InferenceResponse(output_tensors=[], error=error))

    # -- failing well: drain, engine failure (on the event loop) -----------------------
    def _on_loop(self, callback, *args) -> None:
        """Run on the event loop (the only thread that may talk to Triton), or here if no
        request has come yet (then there is nothing to end)."""
        if self.loop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(callback, *args)
        else:
            callback(*args)

    def _drain(self, timeout_s: float) -> None:
        self.admission.draining = True
        self.logger.log_info(f"tensorrt_llm: draining: no new requests; {len(self.active)} running get "
                             f"{timeout_s:g} s to finish")
        if self.loop is not None and self.active:
            self.loop.call_later(timeout_s, self._end_all_with,
                                 f"{SHUTDOWN_PREFIX}; the drain timeout ({timeout_s:g} s) passed")

    def _engine_failed(self, reason: str) -> None:
        self.admission.failure = reason
        self.logger.log_error(f"tensorrt_llm: the engine failed: {reason}. Ending {len(self.active)} running "
                              "requests with an error and stopping tritonserver (not ready) for a restart")
        self._end_all_with(f"{ENGINE_FAILED_PREFIX}: {reason}")
        if self.loop is not None and self.loop.is_running():
            self.loop.call_later(STOP_SERVER_DELAY_S, self._stop_server)
        else:
            self._stop_server()

    def _end_all_with(self, reason: str) -> None:
        """End every running request now with `reason` (its task sends the final response)."""
        for entry in list(self.active):
            if entry.task is not None and not entry.task.done() and entry.ended_by is None:
                entry.ended_by = reason
                entry.task.cancel()

    def _stop_server(self) -> None:
        # No Python-backend call marks a model not ready (tritonserver 2.51); a server that is
        # exiting is not ready, and one without its engine has nothing left to serve.
        parent = os.getppid()
        try:
            name = Path(f"/proc/{parent}/comm").read_text().strip()
        except OSError:
            name = ""
        if name != "tritonserver":
            self.logger.log_error(f"tensorrt_llm: not stopping the parent process {parent} ({name!r}): "
                                  "not a tritonserver")
            return
        self.logger.log_error(f"tensorrt_llm: stopping tritonserver (pid {parent}): the engine failed")
        os.kill(parent, signal.SIGTERM)

    def _finish_with_reason(self, entry: ActiveRequest, message: str, finish_reason: str) -> None:
        """The final response of a request the model ended itself. Before any token: an error
        whose text says why (its prefix says which: admission.py). After tokens: a normal final
        response whose finish_reason says which ("cancelled" by a drain, "error" on a failed
        engine), since an error mid-stream leaves the ensemble request hanging; the log says why."""
        self.logger.log_warn(f"tensorrt_llm: request ended ({finish_reason}, {entry.responses_sent} responses "
                             f"sent): {message}")
        if entry.responses_sent:
            self._send_step(entry, [], [], finish_reason)
        else:
            self._send_raw(entry.sender, pb_utils.InferenceResponse(
                output_tensors=[], error=_triton_error(message, "UNAVAILABLE")))

    def _send(self, sender, arrays: dict[str, np.ndarray], final: bool) -> None:
        tensors = [pb_utils.Tensor(name, array) for name, array in arrays.items()]
        response = pb_utils.InferenceResponse(output_tensors=tensors)
        if final:
            self._send_raw(sender, response)
        else:
            try:
                sender.send(response)
            except Exception as err:   # the client went away; the cancel check ends the request
                self.logger.log_verbose(f"tensorrt_llm: response not delivered: {err}")

    def _send_raw(self, sender, response) -> None:
        """Send a final response; if that fails, at least the final flag, or Triton keeps the
        request in flight until the exit timeout."""
        try:
            sender.send(response, flags=FINAL)
        except Exception as err:
            self.logger.log_verbose(f"tensorrt_llm: final response not delivered ({err}); sending the flag alone")
            try:
                sender.send(flags=FINAL)
            except Exception:
                pass

    def _release(self, entry: ActiveRequest, finish_reason: str) -> None:
        self.active.discard(entry)
        if entry.key and self.by_key.get(entry.key) is entry:
            del self.by_key[entry.key]
        self.metrics.request_finished(finish_reason, entry.last_stats)
        self._update_active_gauges()

    def _update_active_gauges(self) -> None:
        self.metrics.set_active(len(self.active), self.engine.num_active_requests())
        self.metrics.set_queue_depth(self.admission.queue_depth(len(self.active)))


def _triton_error(message: str, code: str):
    """A TritonError with a named code (UNAVAILABLE: HTTP 503 from Triton, "try elsewhere")."""
    # the codes exist only once the stub runs, not at import
    return pb_utils.TritonError(message, getattr(pb_utils.TritonError, code, pb_utils.TritonError.INTERNAL))
