"""preprocessing without Triton: every bad input is refused with the ensemble input's
name, and the engine gets NVIDIA's tensor formats."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ensemble.chat import InputError
from ensemble.preprocessing_model import (
    DEFAULT_MAX_TOKENS,
    INPUTS,
    OUTPUTS,
    bad_words_array,
    preprocess,
)
from ensemble.tokenizer import load_tokenizer
from python_backend.prompt_limits import PromptLimits

REPO = Path(__file__).resolve().parents[1]
MAX_SEQ_LEN = 2048


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_dir):
    """The real SmolLM2 tokenizer (conftest's `smollm2_dir` converts the packaged checkpoint if missing)."""
    return load_tokenizer(smollm2_dir)


def text(value: str | bytes) -> np.ndarray:
    return np.array([[value.encode() if isinstance(value, str) else value]], dtype=object)


def texts(*values: str | bytes) -> np.ndarray:
    return np.array([[v.encode() if isinstance(v, str) else v for v in values]], dtype=object).reshape(1, -1)


def int32(value: int) -> np.ndarray:
    return np.array([[value]], dtype=np.int32)


def run(tokenizer, max_seq_len=MAX_SEQ_LEN, max_num_tokens=8192, as_user_message=False, **inputs):
    return preprocess(inputs, tokenizer, PromptLimits(max_seq_len, max_num_tokens), as_user_message)


def refused(tokenizer, pattern: str, max_seq_len=MAX_SEQ_LEN, max_num_tokens=8192, **inputs):
    with pytest.raises(InputError, match=pattern):
        run(tokenizer, max_seq_len, max_num_tokens, **inputs)


def test_text_input_is_the_raw_prompt_tokenized_as_nvidias_preprocessing_does(smollm2_tokenizer):
    """No chat template: tokenizer.encode(text, add_special_tokens=True), so a control-token
    string the client wrote is that control token (the client's own template)."""
    raw = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
    result = run(smollm2_tokenizer, QUERY=text(raw))
    hf = smollm2_tokenizer._hf
    assert result.input_ids == hf.encode(raw, add_special_tokens=True)
    assert result.input_ids[0] == hf.convert_tokens_to_ids("<|im_start|>")
    assert hf.decode(result.input_ids) == raw
    plain = run(smollm2_tokenizer, QUERY=text("The capital of France is")).input_ids
    assert plain == hf.encode("The capital of France is") and "<|im_start|>" not in smollm2_tokenizer._hf.decode(plain)


def test_text_input_as_one_user_message_is_a_model_parameter_off_by_default(smollm2_tokenizer):
    result = run(smollm2_tokenizer, as_user_message=True, QUERY=text("What is 2+2?"))
    assert result.input_ids == smollm2_tokenizer.render_chat([{"role": "user", "content": "What is 2+2?"}])
    assert run(smollm2_tokenizer, QUERY=text("What is 2+2?")).input_ids != result.input_ids
    result = run(smollm2_tokenizer, QUERY=text("What is 2+2?"))
    assert result.max_tokens == DEFAULT_MAX_TOKENS
    assert result.stop_strings == ()
    assert result.end_id == result.pad_id == smollm2_tokenizer.eos_token_id
    assert re.fullmatch(r"[0-9a-f]{32}", result.request_uuid)
    assert run(smollm2_tokenizer, QUERY=text("hi")).request_uuid != result.request_uuid


def test_messages_are_rendered_with_the_chat_template(smollm2_tokenizer):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi <|im_end|>"}]
    result = run(smollm2_tokenizer, MESSAGES=text(json.dumps(chat)))
    assert result.input_ids == smollm2_tokenizer.render_chat(chat)


def test_output_arrays_have_the_declared_shapes(smollm2_tokenizer):
    result = run(smollm2_tokenizer, QUERY=text("Hello"), REQUEST_OUTPUT_LEN=int32(7),
                 STOP_WORDS_DICT=texts("\n\n", "END"), BAD_WORDS_DICT=texts("hello"))
    arrays = result.output_arrays()
    assert set(arrays) == set(OUTPUTS)
    n = len(result.input_ids)
    assert arrays["INPUT_ID"].shape == (1, n) and arrays["INPUT_ID"].dtype == np.int32
    assert arrays["REQUEST_INPUT_LEN"].tolist() == [[n]]
    assert arrays["REQUEST_OUTPUT_LEN"].tolist() == [[7]]
    assert arrays["STOP_STRINGS"].tolist() == [[b"\n\n", b"END"]]
    assert arrays["BAD_WORDS_IDS"].shape[:2] == (1, 2) and arrays["BAD_WORDS_IDS"].dtype == np.int32
    assert arrays["OUT_END_ID"].tolist() == [[2]] and arrays["OUT_PAD_ID"].tolist() == [[2]]
    assert arrays["REQUEST_UUID"].shape == (1, 1) and arrays["REQUEST_UUID"].dtype == object
    for name, (_, dims) in OUTPUTS.items():
        assert arrays[name].ndim == 1 + len(dims), name


def test_no_stop_words_is_an_empty_row(smollm2_tokenizer):
    arrays = run(smollm2_tokenizer, QUERY=text("Hello")).output_arrays()
    assert arrays["STOP_STRINGS"].shape == (1, 0)
    assert arrays["BAD_WORDS_IDS"].shape == (1, 2, 0)


@pytest.mark.parametrize("inputs, pattern", [
    ({}, r"^text_input: required: send the raw prompt as text_input, or a chat as messages$"),
    ({"QUERY": text("a"), "MESSAGES": text('[{"role": "user", "content": "a"}]')},
     r"^text_input, messages: send only one of them$"),
    ({"QUERY": text("")}, r"^text_input: must not be empty$"),
    ({"QUERY": text(b"caf\xe9")}, r"^text_input: not valid UTF-8 \(byte 0xe9 at position 3\)$"),
    ({"MESSAGES": text("[{")}, r"^messages: not valid JSON: .* at line 1 column 3 \(char 2\)$"),
    ({"MESSAGES": text("[]")}, r"^messages: must contain at least one message, got an empty list$"),
    ({"MESSAGES": text('[{"role": "robot", "content": "x"}]')}, r"^messages\[0\]\.role: must be one of"),
    ({"QUERY": np.array([[b"a"], [b"b"]], dtype=object)},
     r"^text_input: batch size 2; send one prompt per request \(shape \[1, \.\.\.\]\)$"),
    ({"QUERY": np.array([[b"a", b"b"]], dtype=object)}, r"^text_input: expected one value \(shape \[1, 1\]\), got 2$"),
    ({"QUERY": text("a"), "REQUEST_OUTPUT_LEN": np.array([[5], [5]], dtype=np.int32)},
     r"^max_tokens: batch size 2; send one prompt per request"),
    ({"QUERY": text("a"), "REQUEST_OUTPUT_LEN": int32(0)}, r"^max_tokens: must be 1\.\.2048 \(max_seq_len\), got 0$"),
    ({"QUERY": text("a"), "REQUEST_OUTPUT_LEN": int32(-3)}, r"^max_tokens: must be 1\.\.2048 \(max_seq_len\), got -3$"),
    ({"QUERY": text("a"), "REQUEST_OUTPUT_LEN": int32(2049)}, r"^max_tokens: must be 1\.\.2048"),
    ({"QUERY": text("a"), "STOP_WORDS_DICT": texts("ok", b"\xff")},
     r"^stop_words\[1\]: not valid UTF-8 \(byte 0xff at position 0\)$"),
    ({"QUERY": text("a"), "STOP_WORDS_DICT": texts("x\ufffd")}, r"^stop_words\[0\]: must not contain U\+FFFD"),
    ({"QUERY": text("a"), "STOP_WORDS_DICT": texts(*[f"s{i}" for i in range(17)])},
     r"^stop_words: at most 16 stop strings, got 17$"),
    ({"QUERY": text("a"), "STOP_WORDS_DICT": texts("é" * 129)},
     r"^stop_words\[0\]: at most 256 UTF-8 bytes, got 258$"),
    ({"QUERY": text("a"), "BAD_WORDS_DICT": texts(b"\xc3")}, r"^bad_words\[0\]: not valid UTF-8"),
    ({"QUERY": text("a"), "END_ID": int32(49152)}, r"^end_id: must be -1 or a token id 0\.\.49151, got 49152$"),
    ({"QUERY": text("a"), "PAD_ID": int32(-2)}, r"^pad_id: must be -1 or a token id 0\.\.49151, got -2$"),
    ({"QUERY": text("a"), "LENGTH_PENALTY": np.array([[0.5]], dtype=np.float32)},
     r"^length_penalty: only 1 is supported \(beam search is not served\), got 0\.5$"),
    ({"QUERY": text("a"), "REPETITION_PENALTY": np.array([[1.2]], dtype=np.float32)},
     r"^repetition_penalty: only 1 is supported"),
    ({"QUERY": text("a"), "PRESENCE_PENALTY": np.array([[0.1]], dtype=np.float32)},
     r"^presence_penalty: only 0 is supported"),
    ({"QUERY": text("a"), "FREQUENCY_PENALTY": np.array([[-1.0]], dtype=np.float32)},
     r"^frequency_penalty: only 0 is supported"),
    ({"QUERY": text("a"), "BEAM_WIDTH": int32(4)},
     r"^beam_width: only 1 is supported \(beam search is not served\), got 4$"),
    ({"QUERY": text("a"), "NUM_RETURN_SEQUENCES": int32(2)}, r"^num_return_sequences: only 1 is supported"),
    ({"QUERY": text("a"), "RETURN_LOG_PROBS": np.array([[True]])},
     r"^return_log_probs: only false is supported \(log probabilities are not returned\), got true$"),
    ({"QUERY": text("a"), "SOMETHING": int32(1)}, r"^SOMETHING: not an input of preprocessing$"),
])
def test_bad_requests_are_refused_naming_the_ensemble_input(smollm2_tokenizer, inputs, pattern):
    refused(smollm2_tokenizer, pattern, **inputs)


def test_prompt_must_be_shorter_than_max_seq_len(smollm2_tokenizer):
    length = len(run(smollm2_tokenizer, QUERY=text("word " * 40)).input_ids)
    refused(smollm2_tokenizer, rf"^text_input: the prompt has {length} tokens; max_seq_len is {length}, so at most "
            rf"{length - 1} prompt tokens leave room to generate: raise max_seq_len", max_seq_len=length,
            QUERY=text("word " * 40))
    chat = json.dumps([{"role": "user", "content": "word " * 40}])
    refused(smollm2_tokenizer, r"^messages: the prompt has", max_seq_len=length, MESSAGES=text(chat))
    assert run(smollm2_tokenizer, max_seq_len=length + 1, QUERY=text("word " * 40)).input_ids


def test_prompt_longer_than_max_num_tokens_is_refused_naming_the_setting_that_lifts_it(smollm2_tokenizer):
    """TensorRT-LLM's PyTorch backend refuses it without chunked prefill (llm.py _check_arguments)."""
    length = len(run(smollm2_tokenizer, QUERY=text("word " * 40)).input_ids)
    refused(smollm2_tokenizer, rf"^text_input: the prompt has {length} tokens, more than max_num_tokens "
            rf"\({length - 1}\); .*set enable_chunked_prefill: true", max_num_tokens=length - 1,
            QUERY=text("word " * 40))
    chunked = preprocess({"QUERY": text("word " * 40)}, smollm2_tokenizer,
                         PromptLimits(MAX_SEQ_LEN, length - 1, enable_chunked_prefill=True))
    assert len(chunked.input_ids) == length


def test_max_tokens_may_be_max_seq_len_and_defaults_below_it(smollm2_tokenizer):
    assert run(smollm2_tokenizer, QUERY=text("a"), REQUEST_OUTPUT_LEN=int32(MAX_SEQ_LEN)).max_tokens == MAX_SEQ_LEN
    assert run(smollm2_tokenizer, max_seq_len=100, QUERY=text("a")).max_tokens == 100


def test_neutral_values_and_compatibility_flags_are_accepted(smollm2_tokenizer):
    result = run(smollm2_tokenizer, QUERY=text("a"), LENGTH_PENALTY=np.array([[1.0]], dtype=np.float32),
                 REPETITION_PENALTY=np.array([[1.0]], dtype=np.float32), BEAM_WIDTH=int32(1),
                 NUM_RETURN_SEQUENCES=int32(1), RETURN_LOG_PROBS=np.array([[False]]),
                 RETURN_NUM_INPUT_TOKENS=np.array([[True]]), RETURN_NUM_OUTPUT_TOKENS=np.array([[True]]),
                 END_ID=int32(-1), PAD_ID=int32(0))
    assert (result.end_id, result.pad_id) == (-1, 0)


def test_stop_words_drop_empty_entries_and_duplicates(smollm2_tokenizer):
    # NVIDIA's example clients send [""] when there are none.
    assert run(smollm2_tokenizer, QUERY=text("a"), STOP_WORDS_DICT=texts("")).stop_strings == ()
    result = run(smollm2_tokenizer, QUERY=text("a"), STOP_WORDS_DICT=texts("END", "", "END", "🙂"))
    assert result.stop_strings == ("END", "🙂")


def test_bad_words_use_nvidias_ids_and_end_offsets_format(smollm2_tokenizer):
    words = ["hello", " world peace", "🙂"]
    ids = [smollm2_tokenizer.encode_plain(word) for word in words]
    array = bad_words_array(smollm2_tokenizer, words)
    flat = [token for word in ids for token in word]
    offsets = np.cumsum([len(word) for word in ids]).tolist()
    assert array.shape == (2, len(flat))
    assert array[0].tolist() == flat
    assert array[1].tolist() == offsets + [-1] * (len(flat) - len(offsets))
    # Special-token strings are plain text here as everywhere.
    assert 1 not in bad_words_array(smollm2_tokenizer, ["<|im_start|>"])[0].tolist()


def test_no_bad_words_is_two_empty_rows(smollm2_tokenizer):
    assert bad_words_array(smollm2_tokenizer, []).shape == (2, 0)
    assert bad_words_array(smollm2_tokenizer, [""]).shape == (2, 0)


def test_input_declarations_cover_the_ensemble_wiring():
    """Every tensor the ensemble maps into preprocessing is declared with the same type and dims."""
    config = (REPO / "model_repository" / "ensemble" / "config.pbtxt").read_text()
    declared = {name: (data_type, dims) for name, data_type, dims in re.findall(
        r'\{ name: "(\w+)" data_type: (\w+) dims: \[ ([-\d, ]+) \]', config)}
    step = config[config.index('model_name: "preprocessing"'):config.index('model_name: "tensorrt_llm"')]
    for key, value in re.findall(r'input_map \{ key: "(\w+)" value: "(\w+)" \}', step):
        data_type, dims, _ = INPUTS[key]
        assert declared[value] == (data_type, ", ".join(map(str, dims))), key
    assert {key for key, _ in re.findall(r'output_map \{ key: "(\w+)" value: "(\w+)" \}', step)} == set(OUTPUTS)
