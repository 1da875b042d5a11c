"""tensorrt_llm request parsing and validation (python_backend/request_tensors.py), without Triton."""
import numpy as np
import pytest

from python_backend.prompt_limits import PromptLimits
from python_backend.protocol import InvalidRequestError, SpeculativeStats
from python_backend.request_tensors import (INPUTS, OUTPUTS, GenerateRequest, StopRequest,
                                            parse_request, response_arrays)

MAX_SEQ_LEN = 2048
VOCAB = 49152
LIMITS = PromptLimits(max_seq_len=MAX_SEQ_LEN, max_num_tokens=8192)


def scalar(value, dtype):
    return np.array([[value]], dtype=dtype)


def request(**overrides):
    inputs = {
        "input_ids": np.array([[1, 2, 3, 4]], dtype=np.int32),
        "request_output_len": scalar(16, np.int32),
    }
    inputs.update(overrides)
    return {name: value for name, value in inputs.items() if value is not None}


def parse(inputs, **kwargs):
    kwargs.setdefault("limits", LIMITS)
    kwargs.setdefault("vocab_size", VOCAB)
    return parse_request(inputs, **kwargs)


def refused(inputs, **kwargs) -> str:
    with pytest.raises(InvalidRequestError) as err:
        parse(inputs, **kwargs)
    return str(err.value)


def test_minimal_request_gets_greedy_defaults():
    parsed = parse(request())
    assert isinstance(parsed, GenerateRequest)
    assert parsed.prompt_token_ids == [1, 2, 3, 4]
    assert parsed.sampling_params.max_tokens == 16
    assert parsed.sampling_params.greedy
    assert parsed.streaming is False
    assert parsed.stop_strings == ()
    assert parsed.request_uuid == ""


def test_all_sampling_inputs_map_to_sampling_params():
    parsed = parse(request(
        runtime_top_k=scalar(40, np.int32), runtime_top_p=scalar(0.9, np.float32),
        temperature=scalar(0.7, np.float32), seed=scalar(2**63 + 5, np.uint64),
        min_tokens=scalar(3, np.int32), end_id=scalar(2, np.int32), pad_id=scalar(2, np.int32),
        streaming=scalar(True, bool), return_perf_metrics=scalar(False, bool),
        request_uuid=scalar(b"abc123", object),
        stop_strings=np.array([[b"\n\n", "Ende".encode(), b""]], dtype=object)))
    params = parsed.sampling_params
    assert (params.top_k, params.seed, params.min_tokens, params.end_id, params.pad_id) == (40, 2**63 + 5, 3, 2, 2)
    assert params.top_p == pytest.approx(0.9) and params.temperature == pytest.approx(0.7)
    assert params.return_perf_metrics is False
    assert parsed.streaming is True
    assert parsed.request_uuid == "abc123"
    assert parsed.stop_strings == ("\n\n", "Ende")   # empty strings dropped


@pytest.mark.parametrize("names", [("seed", "min_tokens"), ("random_seed", "min_length")])
def test_nvidia_names_and_their_older_aliases_are_both_accepted(names):
    seed_name, min_name = names
    params = parse(request(**{seed_name: scalar(7, np.uint64), min_name: scalar(3, np.int32)})).sampling_params
    assert (params.seed, params.min_tokens) == (7, 3)
    same = parse(request(seed=scalar(7, np.uint64), random_seed=scalar(7, np.uint64))).sampling_params
    assert same.seed == 7


@pytest.mark.parametrize("name, alias, dtype", [("seed", "random_seed", np.uint64),
                                                ("min_tokens", "min_length", np.int32)])
def test_a_name_and_its_alias_with_different_values_is_an_error_naming_both(name, alias, dtype):
    message = refused(request(**{name: scalar(1, dtype), alias: scalar(2, dtype)}))
    assert message.startswith(f"{name}, {alias}: both sent with different values (1 and 2)")


def test_prompt_longer_than_max_num_tokens_is_refused_unless_chunked_prefill_is_on():
    """TensorRT-LLM's PyTorch backend rule (llm.py _check_arguments)."""
    limits = PromptLimits(max_seq_len=MAX_SEQ_LEN, max_num_tokens=8)
    nine = np.ones((1, 9), dtype=np.int32)
    message = refused(request(input_ids=nine), limits=limits)
    assert message.startswith("input_ids: the prompt has 9 tokens, more than max_num_tokens (8)")
    assert "enable_chunked_prefill: true" in message
    assert parse(request(input_ids=np.ones((1, 8), dtype=np.int32)), limits=limits).prompt_token_ids == [1] * 8
    chunked = PromptLimits(max_seq_len=MAX_SEQ_LEN, max_num_tokens=8, enable_chunked_prefill=True)
    assert len(parse(request(input_ids=nine), limits=chunked).prompt_token_ids) == 9


def test_max_tokens_is_cut_to_what_fits_in_max_seq_len():
    """As TensorRT-LLM's _deduce_max_tokens does (base_worker.py): cut, not refused."""
    parsed = parse(request(input_ids=np.ones((1, MAX_SEQ_LEN - 10), dtype=np.int32),
                           request_output_len=scalar(100, np.int32)))
    assert parsed.sampling_params.max_tokens == 10 and parsed.requested_output_len == 100


def test_input_lengths_cuts_a_padded_prompt():
    parsed = parse(request(input_ids=np.array([[5, 6, 7, 0, 0]], dtype=np.int32),
                           input_lengths=scalar(3, np.int32)))
    assert parsed.prompt_token_ids == [5, 6, 7]


@pytest.mark.parametrize("output_len", [0, -3, MAX_SEQ_LEN + 1, 2**31 - 1])
def test_request_output_len_out_of_range_is_refused_naming_it(output_len):
    message = refused(request(request_output_len=scalar(output_len, np.int32)))
    assert message.startswith("request_output_len must be 1..2048") and str(output_len) in message


def test_request_output_len_is_required():
    assert refused(request(request_output_len=None)).startswith("request_output_len: required")


def test_output_len_is_clamped_to_the_room_left_by_the_prompt():
    prompt = np.arange(MAX_SEQ_LEN - 10, dtype=np.int32).reshape(1, -1)
    parsed = parse(request(input_ids=prompt, request_output_len=scalar(100, np.int32)))
    assert parsed.sampling_params.max_tokens == 10
    assert parsed.requested_output_len == 100


@pytest.mark.parametrize("name,value,start", [
    ("temperature", -0.5, "temperature must be >= 0"),
    ("temperature", float("nan"), "temperature must be >= 0"),
    ("runtime_top_p", 1.5, "runtime_top_p must be in (0, 1]"),
    ("runtime_top_p", 0.0, "runtime_top_p must be in (0, 1]"),
])
def test_bad_float_sampling_inputs_are_refused_naming_them(name, value, start):
    assert refused(request(**{name: scalar(value, np.float32)})).startswith(start)


@pytest.mark.parametrize("name,value,start", [
    ("runtime_top_k", -1, "runtime_top_k must be >= 0"),
    ("min_tokens", -2, "min_tokens must be >= 0"),
    ("min_length", -2, "min_tokens must be >= 0"),
    ("end_id", -5, "end_id must be -1 or a token id"),
    ("end_id", VOCAB, "end_id must be -1 or a token id"),
    ("input_lengths", 9, "input_lengths must be 1..4"),
    ("input_lengths", 0, "input_lengths must be 1..4"),
])
def test_bad_int_inputs_are_refused_naming_them(name, value, start):
    assert refused(request(**{name: scalar(value, np.int32)})).startswith(start)


def test_prompt_longer_than_max_seq_len_is_refused_naming_input_ids():
    prompt = np.ones((1, MAX_SEQ_LEN + 5), dtype=np.int32)
    message = refused(request(input_ids=prompt))
    assert message.startswith("input_ids: the prompt has 2053 tokens; max_seq_len is 2048")
    assert "raise max_seq_len" in message


def test_prompt_filling_max_seq_len_leaves_no_room_and_is_refused():
    assert refused(request(input_ids=np.ones((1, MAX_SEQ_LEN), dtype=np.int32))).startswith("input_ids:")


@pytest.mark.parametrize("ids,start", [
    ([[]], "input_ids: the prompt must hold at least one token"),
    ([[1, VOCAB]], "input_ids: token id 49152 is outside the vocabulary"),
    ([[-1, 4]], "input_ids: token id -1 is outside the vocabulary"),
])
def test_bad_prompts_are_refused(ids, start):
    assert refused(request(input_ids=np.array(ids, dtype=np.int32).reshape(1, -1))).startswith(start)


def test_missing_prompt_is_refused():
    assert refused(request(input_ids=None)).startswith("input_ids: required")


def test_wrong_dtype_is_refused_naming_the_input():
    message = refused(request(temperature=scalar(1, np.int32)))
    assert message == "temperature must be TYPE_FP32, got int32"


def test_batch_of_two_prompts_is_refused():
    message = refused(request(input_ids=np.ones((2, 3), dtype=np.int32)))
    assert message.startswith("input_ids: batch size 2; send one prompt per request")


def test_unknown_input_is_refused():
    assert refused(request(max_tokens=scalar(4, np.int32))).startswith("max_tokens: not an input of tensorrt_llm")


def test_non_utf8_stop_string_is_refused():
    message = refused(request(stop_strings=np.array([[b"\xff\xfe"]], dtype=object)))
    assert message == "stop_strings: not valid UTF-8"


def test_bad_words_in_nvidia_flattened_format():
    bad = np.array([[[5, 6, 7, 0], [2, 3, -1, -1]]], dtype=np.int32)   # words (5, 6) and (7,)
    assert parse(request(bad_words_list=bad)).sampling_params.bad_words_ids == ((5, 6), (7,))


def test_bad_words_with_offsets_past_the_ids_are_refused():
    bad = np.array([[[5, 6], [3, -1]]], dtype=np.int32)
    assert refused(request(bad_words_list=bad)).startswith("bad_words_list: offsets must increase")


def test_stop_form_targets_request_uuid_else_the_triton_request_id():
    stop = {"stop": scalar(True, bool), "request_uuid": scalar(b"u-1", object)}
    assert parse(stop) == StopRequest("u-1")
    assert parse({"stop": scalar(True, bool)}, request_id="client-7") == StopRequest("client-7")
    assert refused({"stop": scalar(True, bool)}).startswith("stop: needs request_uuid")


def test_stop_false_is_an_ordinary_request():
    assert isinstance(parse(request(stop=scalar(False, bool))), GenerateRequest)


def test_declared_inputs_and_outputs_follow_the_interface():
    assert "request_output_len" in INPUTS and INPUTS["input_ids"][1] == [-1]
    assert INPUTS["bad_words_list"][1] == [2, -1]
    assert set(OUTPUTS) == {
        "output_ids", "sequence_length", "context_ids", "request_uuid", "finish_reason", "stop_strings_out",
        "num_input_tokens", "num_output_tokens", "total_draft_tokens", "total_accepted_draft_tokens",
        "acceptance_length", "acceptance_rate"}


def test_response_arrays_have_the_batch_dim_and_declared_types():
    stats = SpeculativeStats(total_draft_tokens=6, total_accepted_draft_tokens=3, drafting_steps=2)
    arrays = response_arrays(token_ids=[7, 8, 9], context_ids=[4, 5], request_uuid="u", finish_reason="stop",
                             stop_strings=("\n",), num_input_tokens=4, num_output_tokens=12, stats=stats)
    assert set(arrays) == set(OUTPUTS)
    assert arrays["output_ids"].shape == (1, 1, 3) and arrays["output_ids"].dtype == np.int32
    assert arrays["sequence_length"].tolist() == [[3]]
    assert arrays["context_ids"].tolist() == [[4, 5]]
    assert arrays["finish_reason"].tolist() == [[b"stop"]]
    assert arrays["stop_strings_out"].tolist() == [[b"\n"]]
    assert arrays["acceptance_length"].tolist() == [[2.5]]   # 1 + 3 accepted / 2 drafting steps
    assert arrays["acceptance_rate"].tolist() == [[0.5]]
    for name, (data_type, dims) in OUTPUTS.items():
        assert arrays[name].ndim == len(dims) + 1 and arrays[name].shape[0] == 1, name


def test_empty_response_arrays_keep_their_shapes():
    arrays = response_arrays(token_ids=[], context_ids=[], request_uuid="", finish_reason=None, stop_strings=(),
                             num_input_tokens=0, num_output_tokens=0, stats=SpeculativeStats())
    assert arrays["output_ids"].shape == (1, 1, 0)
    assert arrays["context_ids"].shape == (1, 0)
    assert arrays["stop_strings_out"].shape == (1, 0)
    assert arrays["finish_reason"].tolist() == [[b""]]
