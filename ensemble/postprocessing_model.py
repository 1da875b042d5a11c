"""The `postprocessing` Triton model: one engine response in, its text delta out.

Stateless per response: the engine sends, with each step's tokens, the tokens just
before them (CONTEXT_IDS), which is all `text_delta` needs (docs/interface.md §3).
It runs as ONE instance, so a stream's responses keep their order.

It never returns an error: an error after the decoupled engine model leaks the
ensemble request (the client never sees a final response). An internal problem is
logged and answered with an empty text.

Cancellation: Triton does not tell a decoupled model inside an ensemble that its
client went away, but the step after it sees `request.is_cancelled()`. Then we send
the engine model its `stop` form (request_uuid + stop=true) by BLS, once per request.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ensemble.detokenizer import text_delta
from ensemble.triton_io import declare_tensors, engine_config_path, model_parameter

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside tritonserver (unit tests): the plain functions still work
    pb_utils = None

DEFAULT_ENGINE_MODEL = "tensorrt_llm"
STOPPED_IDS_REMEMBERED = 4096   # a cancelled stream's later responses must not re-send the stop

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
    new_ids = [] if tokens is None else [int(t) for t in np.asarray(tokens).reshape(-1)]
    lengths = _first(inputs.get("SEQUENCE_LENGTH"))
    if lengths is not None and np.asarray(lengths).size:
        length = int(np.asarray(lengths).reshape(-1)[0])
        if 0 <= length < len(new_ids):
            new_ids = new_ids[:length]
    context = _first(inputs.get("CONTEXT_IDS"))
    context_ids = [] if context is None else [int(t) for t in np.asarray(context).reshape(-1)]
    stops = _first(inputs.get("STOP_STRINGS"))
    stop_strings = () if stops is None else tuple(
        text for text in (_text(item) for item in np.asarray(stops).reshape(-1)) if text)
    return EngineStep(new_ids=new_ids, context_ids=context_ids,
                      request_uuid=_scalar_text(inputs.get("REQUEST_UUID")),
                      finish_reason=_scalar_text(inputs.get("FINISH_REASON")),
                      stop_strings=stop_strings)


def postprocess(inputs: Mapping[str, np.ndarray], tokenizer, cancelled: bool = False,
                log_error=None) -> dict[str, np.ndarray]:
    """One engine response's arrays -> the output arrays (each with the batch dim of 1).

    Never raises: on a problem it logs through `log_error` and answers an empty text.
    """
    text, finish_reason = "", ""
    try:
        step = read_step(inputs)
        finish_reason = step.finish_reason
        if not cancelled:
            text = text_delta(tokenizer, step.context_ids, step.new_ids, step.stop_strings, step.final)
    except Exception as err:
        if log_error is not None:
            log_error(f"postprocessing: answering an empty text after an internal error: {err!r}")
    outputs = {
        "OUTPUT": np.array([[text.encode("utf-8")]], dtype=object),
        "OUT_FINISH_REASON": np.array([[finish_reason.encode("utf-8")]], dtype=object),
    }
    for name, (output, data_type) in STATS.items():
        outputs[output] = np.array([[_stat(inputs.get(name))]], dtype=_NUMPY_TYPES[data_type])
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
    """postprocessing: not decoupled, one instance; never sends an error."""

    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        return declare_tensors(auto_complete_model_config, INPUTS, OUTPUTS)

    def initialize(self, args):
        from ensemble.tokenizer import load_tokenizer
        from python_backend.config import load_engine_config

        model_config = json.loads(args["model_config"])
        engine_config = load_engine_config(engine_config_path(args["model_repository"], model_config))
        self.tokenizer = load_tokenizer(engine_config.tokenizer_dir)
        self.engine_model = model_parameter(model_config, "engine_model", DEFAULT_ENGINE_MODEL)
        self.stopped_ids: OrderedDict[str, None] = OrderedDict()

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        arrays = {}
        cancelled = False
        try:
            for name in INPUTS:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    arrays[name] = tensor.as_numpy()
            cancelled = request.is_cancelled()
            if cancelled:
                self._stop_engine_request(arrays)
        except Exception as err:
            pb_utils.Logger.log_error(f"postprocessing: reading a response failed: {err!r}")
        outputs = postprocess(arrays, self.tokenizer, cancelled, pb_utils.Logger.log_error)
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
