"""Text in, text out through the `tensorrt_llm` model itself (in-model detokenization).

NVIDIA's own LLM-API Triton model takes `text_input` and streams `text_output` from one decoupled
model, with no ensemble around it (triton-inference-server/tensorrtllm_backend
all_models/llmapi/tensorrt_llm/1/model.py, commit dbae4e889f8fab69963fb2223bb4269aa71aa7d0:
`_convert_request` reads text_input, `_create_response` writes text_output). This is that mode for
our `tensorrt_llm` model, beside the token form the ensemble sends; one engine serves both:

- a request carrying `text_input` or `messages` is checked and tokenized by the preprocessing code
  (ensemble/preprocessing_model.py `preprocess`), with the ensemble's input names and errors;
- each of its responses is turned into text by the postprocessing code (`postprocess`, one
  `OutputParsers` for the model) and carries the ensemble's output names, text deltas as the
  ensemble sends them. A client switches from `ensemble` by changing the model name only.

What it saves: the ensemble's hops (tritonserver and the postprocessing stub) per streamed
response. What it costs: detokenization runs on the engine model's one event-loop thread
(docs/deploy-b200.md, "Will the serving layer keep up"). The maps below are the ensemble's own
wiring (tests/test_ensemble_config.py checks them against model_repository/ensemble/config.pbtxt).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from ensemble.chat import InputError
from ensemble.postprocessing_model import EngineStep, OutputParsers, step_outputs
from ensemble.preprocessing_model import INPUTS as PREPROCESSING_INPUTS, preprocess
from python_backend.prompt_limits import PromptLimits
from python_backend.protocol import InvalidRequestError, SpeculativeStats
from python_backend.request_tensors import INPUTS as ENGINE_INPUTS

# ensemble inputs that go straight to tensorrt_llm (the ensemble's tensorrt_llm step)
SAMPLING_INPUTS = {"top_k": "runtime_top_k", "top_p": "runtime_top_p", "temperature": "temperature",
                   "seed": "seed", "random_seed": "random_seed", "min_tokens": "min_tokens",
                   "min_length": "min_length", "stream": "streaming", "return_perf_metrics": "return_perf_metrics"}
# preprocessing output -> tensorrt_llm input
PREPROCESSED_TO_ENGINE = {"INPUT_ID": "input_ids", "REQUEST_INPUT_LEN": "input_lengths",
                          "REQUEST_OUTPUT_LEN": "request_output_len", "OUT_END_ID": "end_id", "OUT_PAD_ID": "pad_id",
                          "BAD_WORDS_IDS": "bad_words_list", "STOP_STRINGS": "stop_strings",
                          "REQUEST_UUID": "request_uuid"}
# postprocessing output -> what the client sees (the ensemble's outputs)
POSTPROCESSING_TO_CLIENT = {"OUTPUT": "text_output", "OUT_REASONING": "reasoning_output",
                            "OUT_FINISH_REASON": "finish_reason", "OUT_NUM_INPUT_TOKENS": "num_input_tokens",
                            "OUT_NUM_OUTPUT_TOKENS": "num_output_tokens",
                            "OUT_TOTAL_DRAFT_TOKENS": "total_draft_tokens",
                            "OUT_TOTAL_ACCEPTED_DRAFT_TOKENS": "total_accepted_draft_tokens",
                            "OUT_ACCEPTANCE_LENGTH": "acceptance_length", "OUT_ACCEPTANCE_RATE": "acceptance_rate"}

_SAMPLING_TYPES = {"top_k": ("TYPE_INT32", [1]), "top_p": ("TYPE_FP32", [1]), "stream": ("TYPE_BOOL", [1])}
# the text form's inputs that tensorrt_llm does not already declare: name -> (type, dims, optional)
TEXT_INPUTS: dict[str, tuple[str, list[int], bool]] = {
    **{client: (data_type, dims, True) for data_type, dims, client in PREPROCESSING_INPUTS.values()
       if client not in ENGINE_INPUTS},
    **{client: (data_type, dims, True) for client, (data_type, dims) in _SAMPLING_TYPES.items()},
}
TEXT_OUTPUTS: dict[str, tuple[str, list[int]]] = {"text_output": ("TYPE_STRING", [-1]),
                                                  "reasoning_output": ("TYPE_STRING", [-1])}


def is_text_request(arrays: Mapping[str, np.ndarray]) -> bool:
    return "text_input" in arrays or "messages" in arrays


def engine_arrays(arrays: Mapping[str, np.ndarray], tokenizer, limits: PromptLimits) -> dict[str, np.ndarray]:
    """A request's arrays in either form -> the token form `parse_request` reads. Raises
    InvalidRequestError naming the client's input."""
    if not is_text_request(arrays):
        text_only = sorted(name for name in arrays if name in TEXT_INPUTS)
        if text_only:
            raise InvalidRequestError(f"{text_only[0]}: an input of the text form; send it with text_input or "
                                      "messages, or use the token form's inputs with input_ids")
        return dict(arrays)
    if "input_ids" in arrays:
        raise InvalidRequestError("input_ids: send either token ids (input_ids) or text (text_input or messages), "
                                  "not both")
    unknown = sorted(set(arrays) - set(TEXT_INPUTS) - set(SAMPLING_INPUTS)
                     - {client for _, _, client in PREPROCESSING_INPUTS.values()})
    if unknown:
        raise InvalidRequestError(f"{unknown[0]}: not an input of the text form (send the ensemble's inputs)")
    try:
        preprocessed = preprocess({name: arrays[client] for name, (_, _, client) in PREPROCESSING_INPUTS.items()
                                   if client in arrays}, tokenizer, limits)
    except InputError as err:
        raise InvalidRequestError(str(err)) from None
    converted = {PREPROCESSED_TO_ENGINE[name]: array for name, array in preprocessed.output_arrays().items()}
    converted.update({engine: arrays[client] for client, engine in SAMPLING_INPUTS.items() if client in arrays})
    return converted


class TextResponses:
    """A response's values -> the ensemble's client outputs (no engine arrays built or read back),
    one stream's parser kept per request."""

    def __init__(self, tokenizer, log_error: Callable[[str], None] | None = None):
        self._tokenizer = tokenizer
        self._parsers = OutputParsers(tokenizer)
        self._log_error = log_error

    def arrays(self, *, token_ids: Sequence[int], context_ids: Sequence[int], request_uuid: str,
               finish_reason: str | None, stop_strings: Sequence[str], num_input_tokens: int,
               num_output_tokens: int, stats: SpeculativeStats) -> dict[str, np.ndarray]:
        """Takes what `request_tensors.response_arrays` takes."""
        step = EngineStep(new_ids=list(token_ids), context_ids=list(context_ids), request_uuid=request_uuid,
                          finish_reason=finish_reason or "", stop_strings=tuple(stop_strings))
        values = {"NUM_INPUT_TOKENS": num_input_tokens, "NUM_OUTPUT_TOKENS": num_output_tokens,
                  "TOTAL_DRAFT_TOKENS": stats.total_draft_tokens,
                  "TOTAL_ACCEPTED_DRAFT_TOKENS": stats.total_accepted_draft_tokens,
                  "ACCEPTANCE_LENGTH": stats.acceptance_length, "ACCEPTANCE_RATE": stats.acceptance_rate}
        outputs = step_outputs(step, values, self._tokenizer, log_error=self._log_error, parsers=self._parsers)
        return {POSTPROCESSING_TO_CLIENT[name]: array for name, array in outputs.items()}
