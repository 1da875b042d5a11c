"""Streaming text from token steps, stateless per response (docs/interface.md §3).

A streamed response carries several new tokens (accepted drafts) plus the few
tokens generated just before them (`context_ids`). Decoding a chunk alone
breaks multi-byte characters and, with SentencePiece-style decoders, drops
spaces (NVIDIA's per-chunk postprocessing). Instead we decode context + new,
subtract what the context alone showed, and hold back a tail that may still
change: an incomplete UTF-8 character, or the start of a stop string.

Why a bounded context is enough: byte-level decoding is UTF-8 of the
concatenated token bytes, and UTF-8 resynchronizes within 3 bytes, so the text
of the last C tokens equals the text of the whole sequence except for at most
3 leading U+FFFD. With C = 8 + the longest stop string in bytes, everything
`visible` inspects at the tail (a held-back character and a partial stop
string) lies inside the synchronized part.

"The first stop string" is the occurrence that completes first (smallest end;
on a tie, the one that starts earliest), as a streaming engine sees it, so the
cut does not depend on how the tokens were grouped into steps.
"""
from __future__ import annotations

from typing import Protocol, Sequence

REPLACEMENT_CHAR = "\ufffd"
CONTEXT_MARGIN_TOKENS = 8


class Decoder(Protocol):
    def decode(self, ids: Sequence[int]) -> str: ...


def context_window(stop_strings: Sequence[str]) -> int:
    """C: how many tokens before a step the detokenizer needs (8 + longest stop string in UTF-8 bytes)."""
    return CONTEXT_MARGIN_TOKENS + max((len(s.encode("utf-8")) for s in stop_strings), default=0)


def needs_whole_output(tokenizer) -> bool:
    """Formats with channels (Harmony, Qwen3 <think>): postprocessing needs every token before a
    response as its context, not the last C (ensemble/chat_formats/output.py)."""
    return tokenizer.new_output_parser(()) is not None


def find_stop(text: str, stop_strings: Sequence[str]) -> int | None:
    """Index where the first stop string to complete starts in `text`, or None."""
    best: tuple[int, int] | None = None  # (end, start)
    for stop in stop_strings:
        if not stop:
            continue
        start = text.find(stop)
        if start >= 0 and (best is None or (start + len(stop), start) < best):
            best = (start + len(stop), start)
    return None if best is None else best[1]


def _partial_stop_length(text: str, stop_strings: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    held = 0
    for stop in stop_strings:
        for length in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:length]):
                held = length
                break
    return held


def visible_text(text: str, stop_strings: Sequence[str], final: bool) -> str:
    """The part of decoded `text` that may be shown now (see `visible`)."""
    cut = find_stop(text, stop_strings)
    if cut is not None:
        return text[:cut]
    if final:
        return text
    # A character whose bytes have not all arrived decodes as one U+FFFD at the end.
    if text.endswith(REPLACEMENT_CHAR):
        text = text[:-1]
    return text[:len(text) - _partial_stop_length(text, stop_strings)]


def visible(tokenizer: Decoder, ids: Sequence[int], stop_strings: Sequence[str] = (),
            final: bool = False) -> str:
    """decode(ids), cut at the first stop string; unless `final`, minus a trailing
    incomplete character and minus the longest suffix that is a proper prefix of a
    stop string (both may still turn into something else)."""
    return visible_text(tokenizer.decode(list(ids)) if len(ids) else "", stop_strings, final)


def text_delta(tokenizer: Decoder, context_ids: Sequence[int], new_ids: Sequence[int],
               stop_strings: Sequence[str] = (), final: bool = False) -> str:
    """The text that `new_ids` add after `context_ids` (the last C tokens before them).

    Concatenating the deltas of all steps (the last with final=True) gives
    visible(all_ids, final=True), however the tokens were split into steps.
    """
    context_ids = [int(i) for i in context_ids]
    new_ids = [int(i) for i in new_ids]
    shown_before = visible(tokenizer, context_ids, stop_strings, final=False)
    shown_after = visible(tokenizer, context_ids + new_ids, stop_strings, final)
    return shown_after[len(shown_before):]


class StopStringMatcher:
    """Finds the token that completes the first stop string, one engine step at a time.

    Keeps only the last C tokens, so each step decodes a bounded window however
    long the generation gets.
    """

    def __init__(self, tokenizer: Decoder, stop_strings: Sequence[str]):
        self._tokenizer = tokenizer
        self.stop_strings = tuple(s for s in stop_strings if s)
        self._window = context_window(self.stop_strings)
        self._recent: list[int] = []
        self.stopped = False

    def feed(self, new_ids: Sequence[int]) -> int | None:
        """None while no stop string has completed; else how many of `new_ids` to keep
        (up to and including the completing token). After a stop, every feed returns 0."""
        if self.stopped:
            return 0
        new_ids = [int(i) for i in new_ids]
        if not self.stop_strings or not new_ids:
            return None
        if not self._completes(len(new_ids), new_ids):
            self._recent = (self._recent + new_ids)[-self._window:]
            return None
        # "Contains a stop string" only turns true as tokens are added: bisect for the first.
        low, high = 1, len(new_ids)
        while low < high:
            middle = (low + high) // 2
            if self._completes(middle, new_ids):
                high = middle
            else:
                low = middle + 1
        self.stopped = True
        return low

    def _completes(self, keep: int, new_ids: list[int]) -> bool:
        text = self._tokenizer.decode(self._recent + new_ids[:keep])
        return find_stop(text, self.stop_strings) is not None
