"""Splitting a generation into its answer and its reasoning, one engine response at a time.

Formats with channels (Harmony's analysis/final, Qwen3's <think>...</think>) cannot be
decoded from a bounded window of tokens: which output a token belongs to depends on a
marker that may lie thousands of tokens back. So for these formats the engine sends, with
each response, every token before it, and postprocessing keeps one `OutputParser` per
request that it brings up to date from those (ensemble/postprocessing_model.py).

Each output is a `StreamedText`: bytes in, text out, with the same rules as the stateless
ChatML path (ensemble/detokenizer.py): only complete characters are shown before the
final response, and the text is cut at the first stop string, with a possible stop-string
prefix held back. What is shown is always a prefix of what will be shown, so the deltas
of a stream concatenate to the text of one non-streaming response.
"""
from __future__ import annotations

import codecs
from typing import Sequence

from ensemble.detokenizer import visible_text


class StreamedText:
    """One output's text; `strip` = newlines the chat template strips ("", "left", "both")."""

    def __init__(self, stop_strings: Sequence[str] = (), strip: str = ""):
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop_strings = tuple(s for s in stop_strings if s)
        self._strip = strip
        self._text = ""
        self._shown = 0

    @property
    def text(self) -> str:
        return self._text

    def append(self, data: bytes) -> None:
        # the incremental decoder keeps an incomplete UTF-8 tail until its bytes arrive
        self._text += self._decoder.decode(data)

    def shown(self, final: bool) -> str:
        """The text that may be shown after the bytes appended so far: a function of those bytes
        alone, so any process that appended the same bytes shows the same."""
        if final:
            self._text += self._decoder.decode(b"", final=True)
        view = self._text
        if self._strip == "left":
            view = view.lstrip("\n")
        elif self._strip == "both":
            # trailing newlines show only once text follows them (the template strips them)
            view = view.strip("\n")
        return visible_text(view, self._stop_strings, final)

    def delta(self, final: bool) -> str:
        """The text not shown yet that may be shown now."""
        shown = self.shown(final)
        new = shown[self._shown:]
        self._shown = max(self._shown, len(shown))
        return new


class OutputParser:
    """Routes each generated token to the answer (`text`) or the reasoning."""

    def __init__(self, text: StreamedText, reasoning: StreamedText):
        self.text = text
        self.reasoning = reasoning

    def feed(self, token_ids: Sequence[int], final: bool = False) -> tuple[str, str]:
        """Consume one response's tokens; returns the (text, reasoning) deltas it makes visible."""
        self.consume(token_ids)
        return self.text.delta(final), self.reasoning.delta(final)

    def consume(self, token_ids: Sequence[int]) -> None:
        for token in token_ids:
            self._token(int(token))

    def shown(self, final: bool = False) -> tuple[str, str]:
        """(text, reasoning) that may be shown after the tokens consumed so far."""
        return self.text.shown(final), self.reasoning.shown(final)

    def _token(self, token: int) -> None:
        raise NotImplementedError
