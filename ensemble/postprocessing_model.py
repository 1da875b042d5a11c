"""The `postprocessing` Triton model: one engine response in, its text delta out.

Stateless per response: the engine sends, with each step's tokens, the tokens just
before them (CONTEXT_IDS), which is all `text_delta` needs (docs/interface.md §3).

Order-safe over several instances (docs/deploy-b200.md, "Will the serving layer keep up"):
the ensemble sends each engine response as its own request, so with N instances two
responses of one stream run at once in different processes. `dynamic_batching {
preserve_ordering: true }` makes Triton return responses in the order their requests came,
and no answer depends on which instance saw the stream's earlier responses:

- ChatML: the bounded context is enough (ensemble/detokenizer.py).
- Formats with channels (Harmony, Qwen3 <think>): which output a token belongs to can depend
  on a marker far back, so the engine sends the WHOLE output so far as CONTEXT_IDS. Each
  instance keeps an `OutputParser` per request (keyed by REQUEST_UUID) as a cache, brings it
  up to date from CONTEXT_IDS, and answers shown(after) minus shown(before), both functions
  of the tokens alone. The answer goes to OUTPUT, the reasoning to OUT_REASONING; ChatML
  requests answer an empty OUT_REASONING.

The shipped repository still runs one instance without dynamic batching: with it, tritonserver
2.51 answers a cancelled request before `execute`, so the cancellation below never happens
(model_repository/postprocessing/config.pbtxt).

It never returns an error: an error after the decoupled engine model leaks the
ensemble request (the client never sees a final response). An internal problem is
logged and answered with an empty text.

Cancellation: Triton does not tell a decoupled model inside an ensemble that its
client went away, but the step after it sees `request.is_cancelled()`. Then we send
the engine model its `stop` form (request_uuid + stop=true) by BLS, once per request
per instance (the engine ignores a repeated stop).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ensemble.detokenizer import needs_whole_output, text_delta
from ensemble.triton_io import declare_tensors, engine_config_path, model_parameter

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside tritonserver (unit tests): the plain functions still work
    pb_utils = None

DEFAULT_ENGINE_MODEL = "tensorrt_llm"
STOPPED_IDS_REMEMBERED = 4096   # a cancelled stream's later responses must not re-send the stop
# a cache (see OutputParsers): with several instances a stream's final response releases its
# parser in one instance only; the others' copies age out here
PARSERS_REMEMBERED = 1024

# Stats the engine model computes, passed through unchanged: input -> (output, type)
STATS: dict[str, tuple[str, str]] = {
    "NUM_INPUT_TOKENS": ("OUT_NUM_INPUT_TOKENS", "TYPE_INT32"),
    "NUM_OUTPUT_TOKENS": ("OUT_NUM_OUTPUT_TOKENS", "TYPE_INT32"),
    "TOTAL_DRAFT_TOKENS": ("OUT_TOTAL_DRAFT_TOKENS", "TYPE_INT32"),
    "TOTAL_ACCEPTED_DRAFT_TOKENS": ("OUT_TOTAL_ACCEPTED_DRAFT_TOKENS", "TYPE_INT32"),
    "ACCEPTANCE_LENGTH": ("OUT_ACCEPTANCE_LENGTH", "TYPE_FP32"),
    "ACCEPTANCE_RATE": ("OUT_ACCEPTANCE_RATE", "TYPE_FP32"),
}
_NUMPY_TYPES = {"TYPE_INT32": np.int32, "TYPE_FP32": np.float32}

INPUTS: dict[str, tuple[str, list[int]]] = {
    "TOKENS_BATCH": ("TYPE_INT32", [-1, -1]),    # [beam=1, tokens of this step]
    "SEQUENCE_LENGTH": ("TYPE_INT32", [-1]),     # per beam: tokens in TOKENS_BATCH
    "CONTEXT_IDS": ("TYPE_INT32", [-1]),
    "REQUEST_UUID": ("TYPE_STRING", [1]),
    "FINISH_REASON": ("TYPE_STRING", [1]),       # empty until the final response
    "STOP_STRINGS": ("TYPE_STRING", [-1]),
    **{name: (data_type, [1]) for name, (_, data_type) in STATS.items()},
}
OUTPUTS: dict[str, tuple[str, list[int]]] = {
    "OUTPUT": ("TYPE_STRING", [-1]),
    "OUT_REASONING": ("TYPE_STRING", [-1]),      # reasoning delta (analysis channel, <think>); "" for ChatML
    "OUT_FINISH_REASON": ("TYPE_STRING", [1]),
    **{output: (data_type, [1]) for output, data_type in STATS.values()},
}


@dataclass(frozen=True)
class EngineStep:
    """One engine response, read leniently: nothing here may fail the request."""

    new_ids: list[int]
    context_ids: list[int]
    request_uuid: str
    finish_reason: str
    stop_strings: tuple[str, ...]

    @property
    def final(self) -> bool:
        return bool(self.finish_reason)


def read_step(inputs: Mapping[str, np.ndarray]) -> EngineStep:
    beams = _first(inputs.get("TOKENS_BATCH"))            # [beam, tokens]: beam 0 is the text
    tokens = _first(beams) if beams is not None and np.asarray(beams).ndim >= 2 else beams
    new_ids = [] if tokens is None else np.asarray(tokens).reshape(-1).tolist()
    lengths = _first(inputs.get("SEQUENCE_LENGTH"))
    if lengths is not None and np.asarray(lengths).size:
        length = int(np.asarray(lengths).reshape(-1)[0])
        if 0 <= length < len(new_ids):
            new_ids = new_ids[:length]
    context = _first(inputs.get("CONTEXT_IDS"))
    # tolist(): formats with channels send the whole output so far, so this runs per token per response
    context_ids = [] if context is None else np.asarray(context).reshape(-1).tolist()
    stops = _first(inputs.get("STOP_STRINGS"))
    stop_strings = () if stops is None else tuple(
        text for text in (_text(item) for item in np.asarray(stops).reshape(-1)) if text)
    return EngineStep(new_ids=new_ids, context_ids=context_ids,
                      request_uuid=_scalar_text(inputs.get("REQUEST_UUID")),
                      finish_reason=_scalar_text(inputs.get("FINISH_REASON")),
                      stop_strings=stop_strings)


@dataclass
class _ParsedStream:
    """One request's parser in this instance: the tokens it has consumed, and what those show."""

    parser: object
    consumed: int = 0
    shown: tuple[str, str] | None = None   # parser.shown(final=False) at `consumed`, once computed


class OutputParsers:
    """Per-request output parsers of a format with channels; a cache, never the truth: each
    response carries every token before its own, so a parser missing here (evicted, or the
    stream's earlier responses went to another instance) is rebuilt or brought up to date."""

    def __init__(self, tokenizer, capacity: int = PARSERS_REMEMBERED):
        self._tokenizer = tokenizer
        self._capacity = capacity
        self._streams: OrderedDict[str, _ParsedStream] = OrderedDict()
        self.has_channels = needs_whole_output(tokenizer)

    def deltas(self, step: EngineStep) -> tuple[str, str]:
        """(text, reasoning) that `step` adds to its stream; step.context_ids = all tokens before it."""
        if not step.request_uuid:   # nothing to key on: one response is the whole request
            parser = self._tokenizer.new_output_parser(step.stop_strings)
            return parser.feed(step.context_ids + step.new_ids, step.final)
        stream = self._streams.get(step.request_uuid)
        if stream is None or stream.consumed > len(step.context_ids):
            stream = _ParsedStream(self._tokenizer.new_output_parser(step.stop_strings))
            self._streams[step.request_uuid] = stream
            while len(self._streams) > self._capacity:
                self._streams.popitem(last=False)
        else:
            self._streams.move_to_end(step.request_uuid)
        if stream.consumed < len(step.context_ids):   # responses this instance did not see
            stream.parser.consume(step.context_ids[stream.consumed:])
            stream.consumed, stream.shown = len(step.context_ids), None
        before = stream.shown if stream.shown is not None else stream.parser.shown(final=False)
        stream.parser.consume(step.new_ids)
        stream.consumed += len(step.new_ids)
        after = stream.parser.shown(step.final)
        stream.shown = None if step.final else after
        return after[0][len(before[0]):], after[1][len(before[1]):]

    def release(self, request_uuid: str) -> None:
        self._streams.pop(request_uuid, None)

    def __len__(self) -> int:
        return len(self._streams)


def postprocess(inputs: Mapping[str, np.ndarray], tokenizer, cancelled: bool = False,
                log_error=None, parsers: OutputParsers | None = None) -> dict[str, np.ndarray]:
    """One engine response's arrays -> the output arrays (each with the batch dim of 1).

    `parsers` keeps a stream's parser between its responses (formats with channels), a cache
    only: CONTEXT_IDS then holds every token before the response's. Never raises: on a problem
    it logs through `log_error` and answers an empty text.
    """
    step = None
    try:
        step = read_step(inputs)
    except Exception as err:
        if log_error is not None:
            log_error(f"postprocessing: answering an empty text after an internal error: {err!r}")
    stats = {name: _stat(inputs.get(name)) for name in STATS}
    return step_outputs(step, stats, tokenizer, cancelled, log_error, parsers)


def step_outputs(step: EngineStep | None, stats: Mapping[str, float], tokenizer, cancelled: bool = False,
                 log_error=None, parsers: OutputParsers | None = None) -> dict[str, np.ndarray]:
    """`postprocess` from a step already read (None: unreadable) and its STATS values; never raises."""
    text, reasoning = "", ""
    finish_reason = step.finish_reason if step is not None else ""
    try:
        if step is not None and not cancelled:
            parsers = parsers if parsers is not None else OutputParsers(tokenizer)
            if parsers.has_channels:
                text, reasoning = parsers.deltas(step)
            else:
                text = text_delta(tokenizer, step.context_ids, step.new_ids, step.stop_strings, step.final)
    except Exception as err:
        if log_error is not None:
            log_error(f"postprocessing: answering an empty text after an internal error: {err!r}")
    finally:
        if parsers is not None and step is not None and step.final:
            parsers.release(step.request_uuid)
    outputs = {
        "OUTPUT": np.array([[text.encode("utf-8")]], dtype=object),
        "OUT_REASONING": np.array([[reasoning.encode("utf-8")]], dtype=object),
        "OUT_FINISH_REASON": np.array([[finish_reason.encode("utf-8")]], dtype=object),
    }
    for name, (output, data_type) in STATS.items():
        outputs[output] = np.array([[stats.get(name, 0.0)]], dtype=_NUMPY_TYPES[data_type])
    return outputs


def _first(value):
    """Batch row 0 of an input (or None when absent/empty)."""
    if value is None:
        return None
    array = np.asarray(value)
    if array.ndim == 0:
        return array
    return array[0] if array.shape[0] else None


def _text(item) -> str:
    if isinstance(item, str):
        return item
    return bytes(item).decode("utf-8", errors="replace")


def _scalar_text(value) -> str:
    row = _first(value)
    if row is None:
        return ""
    row = np.asarray(row).reshape(-1)
    return _text(row[0]) if row.size else ""


def _stat(value) -> float:
    try:
        row = np.asarray(_first(value)).reshape(-1)
        return float(row[0]) if row.size and row[0] is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


class TritonPythonModel:
    """postprocessing: not decoupled; order-safe over instances (one as shipped); never sends an error."""

    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        return declare_tensors(auto_complete_model_config, INPUTS, OUTPUTS)

    def initialize(self, args):
        from ensemble.tokenizer import load_tokenizer
        from python_backend.config import load_engine_config

        model_config = json.loads(args["model_config"])
        engine_config = load_engine_config(engine_config_path(args["model_repository"], model_config))
        self.tokenizer = load_tokenizer(engine_config.tokenizer_dir, engine_config.chat_format,
                                        engine_config.reasoning_effort)
        self.parsers = OutputParsers(self.tokenizer)
        self.engine_model = model_parameter(model_config, "engine_model", DEFAULT_ENGINE_MODEL)
        self.stopped_ids: OrderedDict[str, None] = OrderedDict()

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        arrays = {}
        cancelled = False
        try:
            # one pass over the request's tensors: a lookup by name per input costs more per response
            arrays = {tensor.name(): tensor.as_numpy() for tensor in request.inputs()}
            cancelled = request.is_cancelled()
            if cancelled:
                self._stop_engine_request(arrays)
        except Exception as err:
            pb_utils.Logger.log_error(f"postprocessing: reading a response failed: {err!r}")
        outputs = postprocess(arrays, self.tokenizer, cancelled, pb_utils.Logger.log_error, self.parsers)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor(name, array) for name, array in outputs.items()])

    def _stop_engine_request(self, arrays: dict[str, np.ndarray]) -> None:
        """Tell the engine model to abort the request behind a cancelled ensemble request."""
        request_uuid = _scalar_text(arrays.get("REQUEST_UUID"))
        if not request_uuid or _scalar_text(arrays.get("FINISH_REASON")) or request_uuid in self.stopped_ids:
            return   # nothing to name, already finished, or already stopped
        self.stopped_ids[request_uuid] = None
        while len(self.stopped_ids) > STOPPED_IDS_REMEMBERED:
            self.stopped_ids.popitem(last=False)
        stop = pb_utils.InferenceRequest(
            model_name=self.engine_model,
            requested_output_names=["finish_reason"],
            inputs=[pb_utils.Tensor("stop", np.array([[True]], dtype=bool)),
                    pb_utils.Tensor("request_uuid", np.array([[request_uuid.encode()]], dtype=object))])
        # A decoupled model answers BLS only through exec(decoupled=True); drain its one response.
        for response in stop.exec(decoupled=True):
            if response.has_error():
                pb_utils.Logger.log_warn(f"postprocessing: stop for {request_uuid} refused: "
                                         f"{response.error().message()}")
