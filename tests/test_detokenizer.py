"""Streaming detokenization (docs/interface.md §3): however the engine groups tokens
into steps, the concatenated deltas are the one-shot text, cut before the first stop
string, and the stream ends at the token that completes it."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ensemble.detokenizer import (
    StopStringMatcher,
    context_window,
    find_stop,
    text_delta,
    visible,
    visible_text,
)
from ensemble.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_dir):
    """The real SmolLM2 tokenizer (conftest's `smollm2_dir` converts the packaged checkpoint if missing)."""
    return load_tokenizer(smollm2_dir)


# Text that breaks naive per-chunk decoding: multi-byte characters that byte-level BPE
# splits across tokens, combining marks, ZWJ emoji, and whitespace runs that BPE merges.
FRAGMENTS = [
    "🙂", "👩‍💻", "🇫🇷", "🏳️‍🌈", "👍🏽", "你好，世界", "日本語のテキスト", "한국어", "Ελληνικά",
    "café", "naïve", "Ångström", "e\u0301", "ß", "Привет", "مرحبا", "עברית", "∑∫√", "€100",
    "def f(x):\n    return x  # ok\n", "\tif (a) {\n\t\tb();\n\t}", "    ", "  \n\n  ", "\n\n\n", "\r\n",
    " ", "  ", "x = [1, 2, 3]", "Hello", " world", ".", "!", "...", "'s", "1234567", "<|im_end|>",
    "<|im_start|>", "</s>", "\\n", "\"quoted\"", "ǅ", "\u200b", "\u00a0",
]
# SmolLM2's byte-level vocab lacks a few bytes (the lead bytes 0xF1/0xF2 of U+40000 and
# above, and some ASCII control characters), so such characters cannot be encoded at
# all; every other character round-trips. Arbitrary bytes are covered by the random-ids test.
text_pieces = st.one_of(
    st.sampled_from(FRAGMENTS),
    st.text(alphabet=st.characters(codec="utf-8", max_codepoint=0x3FFFF, exclude_categories=("Cc", "Cs"),
                                include_characters="\t\n\r", exclude_characters="\ufffd"),
            max_size=8),
)
texts = st.lists(text_pieces, min_size=1, max_size=16).map("".join).filter(bool)
step_sizes = st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=80)


def split_into_steps(ids: list[int], sizes: list[int]) -> list[list[int]]:
    steps, position, index = [], 0, 0
    while position < len(ids):
        size = sizes[index % len(sizes)]
        steps.append(ids[position:position + size])
        position += size
        index += 1
    return steps


def stream(tokenizer, ids: list[int], stop_strings: list[str], sizes: list[int]):
    """What the engine + postprocessing produce: per step, the matcher may end the
    request; postprocessing sees only the step's tokens and the last C before them.
    Returns the deltas and the number of tokens the engine sent."""
    window = context_window(stop_strings)
    matcher = StopStringMatcher(tokenizer, stop_strings)
    deltas, sent = [], 0
    steps = split_into_steps(ids, sizes)
    for index, step in enumerate(steps):
        keep = matcher.feed(step)
        if keep is not None:
            step = step[:keep]
        final = keep is not None or index == len(steps) - 1
        context = ids[max(0, sent - window):sent]
        deltas.append(text_delta(tokenizer, context, step, stop_strings, final))
        sent += len(step)
        if not final:
            # Every intermediate state is already what a one-shot decode would show.
            assert "".join(deltas) == visible(tokenizer, ids[:sent], stop_strings, final=False)
        else:
            break
    return deltas, sent


def check_stream(tokenizer, ids, stop_strings, sizes):
    deltas, sent = stream(tokenizer, ids, stop_strings, sizes)
    streamed = "".join(deltas)
    assert streamed == visible(tokenizer, ids, stop_strings, final=True)
    full_text = tokenizer.decode(ids)
    first_stop = find_stop(full_text, stop_strings)
    if first_stop is None:
        assert sent == len(ids)
        assert streamed == full_text
    else:
        assert streamed == full_text[:first_stop]
        # The engine stops exactly at the completing token, never later.
        assert find_stop(tokenizer.decode(ids[:sent]), stop_strings) is not None
        assert find_stop(tokenizer.decode(ids[:sent - 1]), stop_strings) is None
    for stop in stop_strings:
        assert stop not in streamed
    return streamed


@st.composite
def text_with_stops(draw):
    text = draw(texts)
    stop_strings = []
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        if draw(st.booleans()):
            # A substring of the text itself: often spans token boundaries.
            start = draw(st.integers(min_value=0, max_value=len(text) - 1))
            length = draw(st.integers(min_value=1, max_value=min(12, len(text) - start)))
            stop = text[start:start + length]
        else:
            stop = draw(text_pieces)
        if stop and "\ufffd" not in stop:
            stop_strings.append(stop)
    return text, stop_strings


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=text_with_stops(), sizes=step_sizes)
def test_stream_equals_one_shot_for_any_step_split(smollm2_tokenizer, case, sizes):
    text, stop_strings = case
    ids = smollm2_tokenizer.encode_plain(text)
    streamed = check_stream(smollm2_tokenizer, ids, stop_strings, sizes)
    if not stop_strings:
        assert streamed == text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_ids=st.lists(st.integers(min_value=17, max_value=49151), min_size=1, max_size=60),
       stop_pieces=st.lists(st.sampled_from(FRAGMENTS), max_size=2), sizes=step_sizes)
def test_stream_equals_one_shot_for_arbitrary_token_ids(smollm2_tokenizer, raw_ids, stop_pieces, sizes):
    # Random ids produce broken UTF-8 (stray continuation bytes, truncated characters),
    # as a poorly trained model might: the stream must still equal the one-shot text.
    check_stream(smollm2_tokenizer, raw_ids, stop_pieces, sizes)


MULTIBYTE_TEXTS = ["Hello wörld 🙂 你好，世界", "👩‍💻 codes in 日本語", "Ångström — naïve café 🇫🇷"]


@pytest.mark.parametrize("text", MULTIBYTE_TEXTS)
def test_per_chunk_decoding_breaks_multibyte_text_and_deltas_do_not(smollm2_tokenizer, text):
    ids = smollm2_tokenizer.encode_plain(text)
    # NVIDIA's postprocessing decodes each streamed chunk on its own.
    per_chunk = "".join(smollm2_tokenizer.decode([token]) for token in ids)
    assert per_chunk != text
    assert "\ufffd" in per_chunk
    deltas, _ = stream(smollm2_tokenizer, ids, [], [1])
    assert "".join(deltas) == text


def test_stop_string_spanning_steps_is_never_shown(smollm2_tokenizer):
    text = "The answer is 42. END of story"
    ids = smollm2_tokenizer.encode_plain(text)
    deltas, sent = stream(smollm2_tokenizer, ids, ["END"], [1])
    assert "".join(deltas) == "The answer is 42. "
    assert sent < len(ids)
    # The held-back " E" of "END" never reached the client before the stop.
    assert not any("E" in delta for delta in deltas)


def test_special_tokens_are_skipped_in_the_stream(smollm2_tokenizer):
    ids = smollm2_tokenizer.encode_plain("Hi there") + [smollm2_tokenizer.eos_token_id]
    deltas, _ = stream(smollm2_tokenizer, ids, [], [2])
    assert "".join(deltas) == "Hi there"


def test_matcher_returns_how_many_tokens_of_the_step_to_keep(smollm2_tokenizer):
    ids = smollm2_tokenizer.encode_plain("one two three four five")
    words = [smollm2_tokenizer.decode([token]) for token in ids]
    assert words == ["one", " two", " three", " four", " five"]
    matcher = StopStringMatcher(smollm2_tokenizer, ["thr"])
    assert matcher.feed(ids[:2]) is None
    assert matcher.feed(ids[2:5]) == 1  # " three" completes "thr": keep it, drop the rest
    assert matcher.feed(ids[5:]) == 0


def test_matcher_window_stays_bounded(smollm2_tokenizer):
    matcher = StopStringMatcher(smollm2_tokenizer, ["never appears"])
    ids = smollm2_tokenizer.encode_plain("lorem ipsum dolor sit amet " * 200)
    for start in range(0, len(ids), 4):
        assert matcher.feed(ids[start:start + 4]) is None
    assert len(matcher._recent) <= context_window(["never appears"])


def test_matcher_without_stop_strings_never_stops(smollm2_tokenizer):
    matcher = StopStringMatcher(smollm2_tokenizer, [])
    assert matcher.feed(smollm2_tokenizer.encode_plain("anything at all")) is None


def test_context_window_is_eight_plus_longest_stop_string_in_bytes():
    assert context_window([]) == 8
    assert context_window(["ab", "🙂"]) == 12
    assert context_window(["你好"]) == 14


def test_first_stop_string_is_the_first_to_complete():
    # "bc" completes at index 3, before "abcd" does, although "abcd" starts earlier.
    assert find_stop("xabcd", ["abcd", "bc"]) == 2
    # On the same end, the longer (earlier-starting) one wins.
    assert find_stop("xabc", ["bc", "abc"]) == 1
    assert find_stop("xyz", ["q"]) is None


def test_visible_holds_back_incomplete_characters_and_stop_prefixes():
    assert visible_text("Hello \ufffd", [], final=False) == "Hello "
    assert visible_text("Hello \ufffd", [], final=True) == "Hello \ufffd"
    assert visible_text("Hello wo", ["world!"], final=False) == "Hello "
    assert visible_text("Hello wo", ["world!"], final=True) == "Hello wo"
    assert visible_text("Hello world! more", ["world!"], final=False) == "Hello "
    assert visible_text("Hello €\ufffd", ["€x"], final=False) == "Hello "
