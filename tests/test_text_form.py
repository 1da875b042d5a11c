"""The text form of `tensorrt_llm` (python_backend/text_form.py) without Triton: it is the ensemble's
wiring run in one process, so its maps must be the ensemble's, and a text request becomes the token
request the ensemble would have sent."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ensemble.tokenizer import load_tokenizer
from python_backend import text_form
from python_backend.prompt_limits import PromptLimits
from python_backend.protocol import InvalidRequestError
from python_backend.request_tensors import GenerateRequest, parse_request
from python_backend.protocol import SpeculativeStats
from test_ensemble_config import STEPS

LIMITS = PromptLimits(max_seq_len=8192, max_num_tokens=8192)


def test_maps_are_the_ensembles_wiring():
    (_, _, pre_out), (_, engine_in, _), (_, _, post_out) = STEPS
    ensemble_tensor_to_engine = {tensor: key for key, tensor in engine_in.items()}
    assert text_form.PREPROCESSED_TO_ENGINE == {key: ensemble_tensor_to_engine[tensor] for key, tensor in pre_out.items()}
    assert text_form.SAMPLING_INPUTS == {tensor: key for key, tensor in engine_in.items() if not tensor.startswith("_")}
    assert text_form.POSTPROCESSING_TO_CLIENT == post_out


@pytest.fixture(scope="module")
def qwen3():
    return load_tokenizer("/unused", "qwen3")


def text(value: str) -> np.ndarray:
    return np.array([[value.encode()]], dtype=object)


def test_a_chat_becomes_the_token_request_the_ensemble_sends(qwen3):
    arrays = {"messages": text(json.dumps([{"role": "user", "content": "Hi"}])),
              "max_tokens": np.array([[7]], dtype=np.int32), "stream": np.array([[True]]),
              "top_k": np.array([[3]], dtype=np.int32), "stop_words": np.array([[b"END"]], dtype=object)}
    parsed = parse_request(text_form.engine_arrays(arrays, qwen3, LIMITS), limits=LIMITS)
    assert isinstance(parsed, GenerateRequest)
    assert parsed.prompt_token_ids == qwen3.render_chat([{"role": "user", "content": "Hi"}])
    assert (parsed.requested_output_len, parsed.streaming, parsed.sampling_params.top_k) == (7, True, 3)
    assert parsed.stop_strings == ("END",) and len(parsed.request_uuid) == 32


@pytest.mark.parametrize("arrays, message", [
    ({"text_input": text("")}, "text_input: must not be empty"),
    ({"text_input": text("Hi"), "input_ids": np.array([[1]], dtype=np.int32)}, "input_ids: send either"),
    ({"text_input": text("Hi"), "request_output_len": np.array([[4]], dtype=np.int32)},
     "request_output_len: not an input of the text form"),
    ({"input_ids": np.array([[1]], dtype=np.int32), "max_tokens": np.array([[4]], dtype=np.int32)},
     "max_tokens: an input of the text form"),
])
def test_bad_requests_are_refused_by_input_name(qwen3, arrays, message):
    with pytest.raises(InvalidRequestError, match=f"^{message}"):
        text_form.engine_arrays(arrays, qwen3, LIMITS)


def test_responses_carry_the_ensembles_outputs(qwen3):
    responses = text_form.TextResponses(qwen3)
    ids = qwen3.encode_plain("plan") + [151668] + qwen3.encode_plain("\n\nParis.")
    seen = []
    for start in range(0, len(ids), 2):
        final = "stop" if start + 2 >= len(ids) else None
        seen.append(responses.arrays(token_ids=ids[start:start + 2], context_ids=ids[:start], request_uuid="r",
                                     finish_reason=final, stop_strings=(), num_input_tokens=5,
                                     num_output_tokens=start + 2, stats=SpeculativeStats()))
    assert set(seen[0]) == set(text_form.POSTPROCESSING_TO_CLIENT.values())
    assert "".join(r["text_output"][0][0].decode() for r in seen) == "Paris."
    assert "".join(r["reasoning_output"][0][0].decode() for r in seen) == "plan"
    assert seen[-1]["finish_reason"][0][0] == b"stop"
